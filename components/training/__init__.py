"""Training a LoRA adapter with TRL: DPO, GRPO and RLOO (`trainer`, `callbacks`, `trl_cpu`), under `accelerate
launch` (`accelerate_launch`, `train_worker`), and the reward model with GRPO/RLOO's reward functions
(`reward_model`, `rewards`)."""
