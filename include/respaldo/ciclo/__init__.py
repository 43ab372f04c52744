"""The copies' lifecycle after they are made: retention, the external copy, encryption."""
