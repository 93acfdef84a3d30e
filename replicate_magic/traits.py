"""Traitlets traits made from the declared settings (``settings.py``): IPython glue.

``%config ReplicateMagics.timeout = -5`` is refused at once with a ``TraitError`` that names
the setting and its allowed range, by the same rule the ``%%replicate`` flags follow.
"""

from __future__ import annotations

from typing import Any

import traitlets
from traitlets import Bool, Dict, HasTraits, TraitError, TraitType, Unicode

from .settings import SETTINGS, Setting

__all__ = ["setting_trait"]


class _Checked(TraitType[Any, Any]):
    """Mixed into a traitlets type: the setting's rule first (its message names the setting
    and what is allowed), then the type's own validation."""

    setting: Setting

    def validate(self, obj: HasTraits | None, value: Any) -> Any:
        try:
            value = self.setting.check(value)
        except ValueError as error:
            raise TraitError(f"{self.setting.name}: {error}") from None
        return super().validate(obj, value)  # type: ignore[misc]  # the trait type mixed in


# Named as traitlets' own, since %config lists a trait by its class name.
class Int(_Checked, traitlets.Int):
    pass


class Float(_Checked, traitlets.Float):
    pass


class Enum(_Checked, traitlets.Enum):
    pass


_KINDS: dict[type, type[TraitType[Any, Any]]] = {int: Int, float: Float, str: Unicode, bool: Bool, dict: Dict}


def setting_trait(name: str, default: Any = None, **kwargs: Any) -> TraitType[Any, Any]:
    """The trait for setting ``name``, with its help and rule; ``default`` when it differs
    from the declared one (the panel's sliders start at a value)."""
    setting = SETTINGS[name]
    value = setting.default if default is None else default
    if setting.choices:
        trait: TraitType[Any, Any] = Enum(list(setting.choices), value, help=setting.help, **kwargs)
    elif setting.type is dict:
        return Dict(dict(value), help=setting.help, **kwargs)
    else:
        trait = _KINDS[setting.type](value, help=setting.help, **kwargs)
    if isinstance(trait, _Checked):
        trait.setting = setting
    return trait
