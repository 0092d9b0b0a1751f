#!/usr/bin/env bash
# Evaluation stages every recipe shares: 8 evaluate (teacher-forced bits per sample, code usage
# on the test split). Expects: stage, stop_stage, force, exp_dir.

if run_stage 8 "evaluate on the test split"; then
  vqspeech evaluate "$exp_dir" --split test --out "$exp_dir/metrics.json" --overwrite
  stage_done 8
fi
