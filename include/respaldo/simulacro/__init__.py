"""Restores and restore drills ("simulacros"): every copy is easily recoverable, and proven to be.

- :func:`.restaurar.restaurar`: the command ``respaldo restaurar ARTIFACT|ROW_ID --destino DEST``:
  checks the copy's sum, restores it with the standard tools into a new database or folder, and says
  what came back against what the copy recorded when it was taken.
- :func:`.ejercicio.drill`: one drill of the DAG ``respaldo_simulacro`` (built by
  :func:`respaldo.dag_factory.build_drill_dag`, run by :mod:`.tareas`): the newest good copy restored
  into scratch, compared, dropped, recorded in ``respaldo.simulacro``, alerted when it fails.
- :mod:`.grupos` (which drill server, which pool), :mod:`.destino` (new databases and folders, the
  scratch and its leftovers), :mod:`.restauracion` (the pipelines), :mod:`.cifras` (the comparisons),
  :mod:`.registro` (``respaldo.simulacro``).

Nothing here is imported by the copies: the figures they record are taken by :mod:`respaldo.sources`
and :mod:`respaldo.integridad`.
"""
