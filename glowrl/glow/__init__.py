"""GLOW (Gain-based LOss Weighting): the weight function, the config and the `trl.SFTTrainer` subclass.

`weights` is the maths (a pure function), `arguments` the GLOW fields and their checks (cheap to import), `config`
`trl.SFTConfig` plus those fields, `trainer` the trainer that applies them.
"""
