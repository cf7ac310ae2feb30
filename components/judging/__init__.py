"""Deciding which of two answers is better, and turning the verdicts into preference pairs: the judges (`judge`,
`remote_judge`, `program_judge` with its sandbox, `refusal_judge`, `biased`), what runs their models (`scorers`),
the programmatic checks, how far a judge can be trusted (`reliability`, `judge_check`), and the pair makers
(`pairs`, `revise`)."""
