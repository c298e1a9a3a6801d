"""Every unlearning method by name: the baselines of `uldkit.methods` and ULD's family.

The baselines register themselves when `uldkit.methods` discovers its modules; ULD and offset
unlearning live a stage later, in `uldkit.uld`, and are imported here so that one lookup
finds every method. A method from outside the package registers with `register` (or
for a `with` block with `registered`) and leaves with `unregister`.
"""

from __future__ import annotations

import uldkit.uld.method  # noqa: F401  (registers "uld")
import uldkit.uld.offset  # noqa: F401  (registers "offset")
from uldkit.methods.registry import all_methods, get_method, register, registered, unregister

__all__ = ["all_methods", "get_method", "register", "registered", "unregister"]
