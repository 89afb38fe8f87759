"""The embedded world of ``make demo``: two operators, three professionals, one exchange.

Why a package: the demo composes the real building blocks (operator CAs with CRLs, SQLite
directories fed by the CAs, the embedded SMTP service writing Maildirs, SoftHSM2 cards or software
keys, the mail agent) and each piece of scaffolding is kept in its own small module:

- :mod:`caducee.demo.operators` — the national root, the operators' CAs, directories, mail;
- :mod:`caducee.demo.people` — professionals with their two key pairs (card or software);
- :mod:`caducee.demo.relay` — SMTP delivery to each recipient's operator;
- :mod:`caducee.demo.scenario` — the story, step by step.
"""

from caducee.demo.scenario import DemoFailure, run_demo

__all__ = ["DemoFailure", "run_demo"]
