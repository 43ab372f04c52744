"""The lifecycle of the copies: retention, the second medium (:mod:`.externo`), encryption."""
