"""Personas: one Python module per persona, each defining ``PERSONA``.

``load_persona("ava")`` imports ``personas/ava.py`` and returns its
``PERSONA``. Modules are data only: importing one does no I/O.
"""

import importlib
import pkgutil
from pathlib import Path

from personas.model import Persona

__all__ = ["Persona", "PersonaNotFoundError", "list_personas", "load_persona"]

_NOT_PERSONAS = {"model"}


class PersonaNotFoundError(LookupError):
    """No persona module of that name; the message lists the valid ones."""


def list_personas() -> list[str]:
    """Names of the persona modules in this package, sorted."""
    folder = Path(__file__).parent
    return sorted(
        info.name
        for info in pkgutil.iter_modules([str(folder)])
        if not info.ispkg and not info.name.startswith("_") and info.name not in _NOT_PERSONAS
    )


def load_persona(name: str) -> Persona:
    """Return the ``PERSONA`` defined by ``personas/<name>.py``.

    Raises:
        PersonaNotFoundError: ``name`` is not a persona module.
        TypeError: the module does not define a ``Persona`` called ``PERSONA``.
    """
    available = list_personas()
    if name not in available:
        raise PersonaNotFoundError(
            f"persona {name!r} not found; available: {', '.join(available)}"
        )
    module = importlib.import_module(f"personas.{name}")
    persona = getattr(module, "PERSONA", None)
    if not isinstance(persona, Persona):
        raise TypeError(f"personas/{name}.py must define PERSONA = Persona(...)")
    return persona
