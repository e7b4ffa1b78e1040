#!/usr/bin/env bash
# The prepared check for a machine with an NVIDIA GPU (bench/README.md): the kernel conformance suite and
# the ILGPU model tests with `cuda` as a backend under test, then GEMM and LoRA-linear throughput on cuda
# beside cpu. Without a CUDA device it says so and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1

dotnet build FedLora.sln -c Release -v quiet
devices=$(dotnet run --project src/Cli -c Release --no-build -- devices)
if ! grep -q "cuda:0" <<<"$devices"; then
  echo "gpu-check: no CUDA device here (ILGPU lists none; 'fedlora devices' shows what there is): nothing to check."
  exit 0
fi
echo "$devices"

echo "== conformance suite and the ILGPU model tests on cuda"
FEDLORA_TEST_DEVICE=cuda dotnet test tests/FedLora.Kernels.Tests -c Release --no-build --filter "FullyQualifiedName~Conformance"
FEDLORA_TEST_DEVICE=cuda dotnet test tests/FedLora.Model.Tests -c Release --no-build --filter "FullyQualifiedName~Ilgpu"

echo "== throughput: cuda beside cpu (GFLOP/s column)"
FEDLORA_BENCH_DEVICES=cpu,cuda:0 dotnet run -c Release --project bench/FedLora.Bench --no-build -- \
  --filter '*.MatmulBenchmarks.Forward' '*.LowRankMatmulBenchmarks.Forward' '*.LowRankMatmulBenchmarks.Backward' \
  --job short --warmupCount 1 --iterationCount 3
