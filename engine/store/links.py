"""Scene links: the auxiliary layers of a scene (its pre-event image, DEM, slope, hillshade).

Auxiliary rasters are scenes in their own right (imported, checksummed, described), so a link is only a
pointer between two scene rows. A link is not user work: deleting either scene drops it (ON DELETE CASCADE).
"""

from __future__ import annotations

from engine.errors import InputError, NotFoundError
from engine.store.base import WorkspaceBase
from engine.store.records import Scene, scene_from_row

LINK_ROLES = ("pre_event", "dem", "slope", "hillshade")


class SceneLinks(WorkspaceBase):
    """One linked scene per (scene, role); linking again replaces the previous one."""

    def link_scene(self, scene_id: int, role: str, linked_scene_id: int) -> Scene:
        """Returns the linked scene, so a caller can show what the role now points at."""
        role = self._link_role(role)
        if scene_id == linked_scene_id:
            raise InputError(f"scene {scene_id}", f"cannot be linked to itself as its {role}")
        with self._tx() as conn:
            for wanted in (scene_id, linked_scene_id):
                if conn.execute("SELECT 1 FROM scenes WHERE id = ?", (wanted,)).fetchone() is None:
                    raise NotFoundError(f"Scene {wanted} does not exist in this workspace")
            conn.execute(
                "INSERT INTO scene_links (scene_id, role, linked_scene_id) VALUES (?, ?, ?)"
                " ON CONFLICT (scene_id, role) DO UPDATE SET linked_scene_id = excluded.linked_scene_id",
                (scene_id, role, linked_scene_id),
            )
            row = conn.execute("SELECT * FROM scenes WHERE id = ?", (linked_scene_id,)).fetchone()
        return scene_from_row(row, self.root)

    def unlink_scene(self, scene_id: int, role: str) -> bool:
        """True when a link was removed; unlinking a role that has none is not an error."""
        role = self._link_role(role)
        with self._tx() as conn:
            cursor = conn.execute("DELETE FROM scene_links WHERE scene_id = ? AND role = ?", (scene_id, role))
            return cursor.rowcount > 0

    def scene_links(self, scene_id: int) -> dict[str, Scene]:
        """Role → linked scene, in LINK_ROLES order."""
        with self._tx(write=False) as conn:
            if conn.execute("SELECT 1 FROM scenes WHERE id = ?", (scene_id,)).fetchone() is None:
                raise NotFoundError(f"Scene {scene_id} does not exist in this workspace")
            rows = conn.execute(
                "SELECT l.role, s.* FROM scene_links l JOIN scenes s ON s.id = l.linked_scene_id"
                " WHERE l.scene_id = ?",
                (scene_id,),
            ).fetchall()
        found = {row["role"]: scene_from_row(row, self.root) for row in rows}
        return {role: found[role] for role in LINK_ROLES if role in found}

    @staticmethod
    def _link_role(role: str) -> str:
        if role not in LINK_ROLES:
            raise InputError(f"link role {role!r}", f"is not one of {', '.join(LINK_ROLES)}")
        return role
