"""Which drill server restores which target, and the Airflow pool each server's drills wait in.

A drill restores a database on the drill server of its engine (``drills.conn_id`` for PostgreSQL,
``drills.mysql_conn_id`` for MySQL/MariaDB; a portal by its database's engine) and everything else
(files, disk images, manual copies) into a scratch folder on this machine. Each of the three is a
group of the DAG ``respaldo_simulacro`` with its own pool, one slot by default, so drills never pile
up on the drill server whatever the number of targets.

Nothing here imports the inventory: the inventory asks this module for its drill pools.
"""

from __future__ import annotations

from typing import Any

#: The DAG's groups (task groups), in the order the DAG lists them.
GROUPS = ("bases_postgres", "bases_mysql", "carpetas")
ENGINE_OF_GROUP = {"bases_postgres": "postgres", "bases_mysql": "mysql"}
POOL_PREFIX = "respaldo_simulacro_"
LOCAL_POOL = f"{POOL_PREFIX}local"


def engine_of(target: Any) -> str | None:
    """The database engine a target's drill restores into (``postgres``, ``mysql``), or None (a folder)."""
    if getattr(target, "mechanism", "automatic") == "manual":
        return None
    if target.kind in ("postgres", "mysql"):
        return target.kind
    if target.kind == "portal":
        return target.database.kind
    return None


def group_of(target: Any) -> str:
    engine = engine_of(target)
    return f"bases_{engine}" if engine else "carpetas"


def server_of(drills: Any, group: str) -> str | None:
    """The drill server's connection for ``group`` (None: a folder group, or not configured)."""
    engine = ENGINE_OF_GROUP.get(group)
    if engine == "postgres":
        return drills.conn_id
    if engine == "mysql":
        return drills.mysql_conn_id
    return None


def pool_of(drills: Any, group: str) -> str:
    """``respaldo_simulacro_<conn_id>`` for a drill server, ``respaldo_simulacro_local`` for the scratch folder."""
    if group not in ENGINE_OF_GROUP:
        return LOCAL_POOL
    return f"{POOL_PREFIX}{server_of(drills, group) or ENGINE_OF_GROUP[group]}"


def groups_of(inventory: Any) -> dict[str, list[Any]]:
    """The inventory's targets by group (groups without targets left out), each sorted by id."""
    found: dict[str, list[Any]] = {}
    for target in sorted(inventory.targets, key=lambda t: t.id):
        found.setdefault(group_of(target), []).append(target)
    return {group: found[group] for group in GROUPS if group in found}


def drill_pools(inventory: Any) -> list[str]:
    """The pools the drills of ``inventory`` run in."""
    return sorted({pool_of(inventory.drills, group) for group in groups_of(inventory)})
