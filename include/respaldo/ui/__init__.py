"""respaldo's pages inside the Airflow UI: the FT-GTI-004 register, each target's copies, the sheet.

:mod:`.app` builds the FastAPI app that ``plugins/respaldo_plugin.py`` mounts at ``/respaldo`` on the
api-server; :mod:`.graficos` draws the SVG charts; ``templates/`` holds the HTML (Jinja2, escaped).
"""
