#!/usr/bin/env bash
# Evaluation stages every recipe shares:
#   8 evaluate: teacher-forced bits per sample and code usage on the test split; the phoneme probe
#     of the codes and of an MFCC + k-means baseline with the same K ($probe_split split; alignments
#     from the manifest, see stage 5), printed side by side; reconstruction and conversion metrics
#     (speaker similarity, recognition error, MCD) on $num_eval test utterances.
#   9 report: one HTML page, $exp_dir/report.html.
# Expects: stage, stop_stage, force, exp_dir, manifest, num_eval, probe_split; `here` is the recipe's folder.

tools_dir="$here/../../tools"

if run_stage 8 "evaluate: bits/sample, phoneme probe vs MFCC k-means, conversion metrics"; then
  vqspeech evaluate loss "$exp_dir" --split test --out "$exp_dir/metrics.json" --overwrite
  vqspeech evaluate probe --codes "$exp_dir/codes" --manifest "$manifest" ${probe_split:+--split "$probe_split"} --name vqvae \
    --out "$exp_dir/probe/vqvae.json" --overwrite
  vqspeech baseline mfcc-kmeans "$manifest" "$exp_dir/baseline/mfcc-kmeans" --like "$exp_dir/codes" --overwrite
  vqspeech evaluate probe --codes "$exp_dir/baseline/mfcc-kmeans" --manifest "$manifest" ${probe_split:+--split "$probe_split"} \
    --name mfcc-kmeans --out "$exp_dir/probe/mfcc-kmeans.json" --overwrite
  python3 "$tools_dir/phoneme_probe.py" "$exp_dir/probe/vqvae.json" "$exp_dir/probe/mfcc-kmeans.json" \
    --out "$exp_dir/probe/table.md" --overwrite
  vqspeech evaluate conversion "$exp_dir" --num "$num_eval" --overwrite
  stage_done 8
fi

if run_stage 9 "report: $exp_dir/report.html"; then
  vqspeech report "$exp_dir"
  stage_done 9
fi
