"""TIFeD single-layer mode: which node trains which layer (the layer groups of one job).

Each node trains one layer; each layer's updates are aggregated within its group. A node gets,
among the layers it can train, an empty group first (so every layer has a group before any has
two), then the group with the lowest summed speed (measured, else the benchmark prior), then
the group with fewer members, then the lower index. A member whose speed is not known yet
counts as fast as the fastest known one: taking it for 0 would pile the new nodes (a Python
worker sends no benchmark) into one group. A choice made before the node's own speed was
measured is made once more when it is; after that the node keeps its layer while it stays.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["LayerGroups"]


@dataclass
class LayerGroups:
    num_layers: int
    _layers: dict[str, int] = field(default_factory=dict)
    # Nodes whose layer was chosen before their own speed was measured.
    _provisional: set[str] = field(default_factory=set)

    def groups(self) -> dict[int, list[str]]:
        """The nodes training each layer (every layer listed, members sorted)."""
        out: dict[int, list[str]] = {i: [] for i in range(self.num_layers)}
        for node_id, layer in sorted(self._layers.items()):
            out.setdefault(layer, []).append(node_id)
        return out

    def assign(
        self,
        node_id: str,
        trainable: Sequence[int],
        speed: Callable[[str], float | None],
        measured: bool,
    ) -> tuple[int, int | None]:
        """The layer ``node_id`` trains now, and the layer it trained before when that changed
        (None when it is unchanged or new). ``trainable`` must not be empty."""
        held = self._layers.get(node_id)
        if held is not None and (node_id not in self._provisional or not measured):
            return held, None
        if held is not None:
            del self._layers[node_id]  # choose again, now with its measured speed
        self._provisional.discard(node_id)
        if not measured:
            self._provisional.add(node_id)
        groups = self.groups()
        speeds = {m: speed(m) for members in groups.values() for m in members}
        fastest = max((v for v in speeds.values() if v is not None), default=1.0)

        def speed_of(member: str) -> float:
            known = speeds[member]
            return fastest if known is None else known

        def load(layer: int) -> tuple[bool, float, int, int]:
            members = groups.get(layer, [])
            return (bool(members), sum(map(speed_of, members)), len(members), layer)

        layer = min(trainable, key=load)
        self._layers[node_id] = layer
        return layer, (held if held is not None and held != layer else None)

    def release(self, node_id: str) -> bool:
        """The node left: its place is free. Whether it held one."""
        self._provisional.discard(node_id)
        return self._layers.pop(node_id, None) is not None

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._layers
