"""Training a LoRA adapter with TRL: DPO, GRPO and RLOO (`trainer`, `callbacks`, `trl_cpu`), in several processes
(`accelerate_launch`, each process running `components/train_worker.py`), and the reward model with GRPO/RLOO's
reward functions (`reward_model`, `rewards`)."""
