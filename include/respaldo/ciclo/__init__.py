"""The lifecycle of the copies: how long they are kept, a second medium, encryption.

- :mod:`.politica`: the inventory's ``retention`` block (per frequency class, overridable per target).
- :mod:`.retencion`: the planner (a pure function: keep or delete, and why, for every copy of a target)
  and the step that applies it to the disk and the register (``respaldo retencion``, the DAGs' task
  ``retencion``).
- :mod:`.externo`: the copy on an external medium (``external``: path, sftp, s3) and its task ``copia_externa``.
- :mod:`.cifrado`: encryption with age (``encryption``: public recipients only; ``.zst.age`` artifacts).

Nothing here imports the modules above this folder (the inventory, the tasks, the CLI): they hand it
what it needs.
"""
