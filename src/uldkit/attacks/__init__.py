"""Attacks on unlearned models: does the forgotten knowledge come back?"""

from uldkit.attacks.relearn import RelearnConfig, relearn_attack, split_forget_set

__all__ = ["RelearnConfig", "relearn_attack", "split_forget_set"]
