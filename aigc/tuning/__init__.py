"""The optimiser that outlives a call: generators tuned from the team's ratings.

pairs.py turns ratings (and scored best_of candidates) into preference pairs; text_dpo.py trains a LoRA
adapter on them with TRL's DPOTrainer; gan_prior.py fits a latent prior for the GAN. Nothing here is
imported by `import aigc`: torch, TRL and PEFT load only when tuning runs.
"""
