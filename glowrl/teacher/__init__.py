"""Stage 0: sampling a teacher's trajectories, labelling them, and storing them as the SFT stage reads them.

`templates` keeps the chat template's round trip exact, `sampler` draws with a seed per sample (transformers or
vLLM), `store` is the append-only, resumable, shardable trajectory file, and `run` drives a generation run. The
stage that runs it is `glowrl.stages.generate`.
"""
