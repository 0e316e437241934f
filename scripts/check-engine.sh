#!/usr/bin/env bash
# Checks the engine against Hugging Face: set up, then run the engine on a bundled tiny DeepSeek-V2 model
# (Hugging Face format, made by scripts/gen_model_fixtures.py) and check logits, loss and every
# gradient against what Hugging Face transformers computed for the same tokens.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v swift >/dev/null 2>&1 || export PATH="/opt/swift/usr/bin:$PATH"
scripts/setup.sh
esft=.build/release/esft
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for model in Tests/Fixtures/models/*/; do
    name=$(basename "$model")
    echo
    echo "== $name: $(python3 -c "import json,sys;c=json.load(open(sys.argv[1]));print('%d layers, %d experts (top-%d), hidden %d' % (c['num_hidden_layers'], c['n_routed_experts'], c['num_experts_per_tok'], c['hidden_size']))" "$model/config.json" 2>/dev/null || true)"
    "$esft" forward --model "$model" --tokens "$model/inputs.json" --out "$out/$name.safetensors" --grads \
        --compare "$model/expected.safetensors"
done
echo
echo "== engine throughput on configs/small.json (random weights)"
"$esft" bench --config configs/small.json --batch 2 --seq 256 --steps 3
