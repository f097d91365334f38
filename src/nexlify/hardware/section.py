"""What every section of the hardware profile (cpu, ram, storage, environment) shares: a frozen
dataclass that goes to ``hardware_profile.json`` as a flat dict and comes back from a partial one."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

SectionT = TypeVar("SectionT", bound="Section")


class Section:
    """Base of a profile section; subclasses are frozen dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """This section's layout in ``hardware_profile.json`` (e.g. ``profile['ram']``)."""
        return asdict(self)

    @classmethod
    def given(cls, values: dict[str, Any] | None) -> dict[str, Any]:
        """The entries of ``values`` that name a field of this section and hold a value (not None)."""
        v = values or {}
        return {f.name: v[f.name] for f in fields(cls) if v.get(f.name) is not None}

    @classmethod
    def from_dict(cls: type[SectionT], values: dict[str, Any] | None) -> SectionT:
        """A section from a partial (e.g. hand-written) dict: the fields it gives, defaults for the rest."""
        return cls(**cls.given(values))
