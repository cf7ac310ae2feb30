"""Sampling answers from a policy: `generator` (transformers, and vLLM through `vllm_worker` in its own process),
`server_generator` (running vLLM servers), `vllm_server` (starting one on this machine)."""
