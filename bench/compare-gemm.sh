#!/usr/bin/env bash
# FedLora's Cpu GEMMs against OpenBLAS (numpy) on the model's shapes, in one run:
#   bash bench/compare-gemm.sh            # N=2048, C in {128,256,512}, O in {C,3C,4C}, r in {4,16,64}
#   bash bench/compare-gemm.sh --c 512 --o-times-c 3 --r 16    # a subset
# Prints, per shape, FedLora's and OpenBLAS's GFLOP/s for the forward GEMM and the two backward
# GEMMs with both cores, their ratio, and LoRA forward's GFLOP/s (counting its extra FLOPs) as a
# percentage of the plain GEMM's. The peer runs without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (they
# force a slower kernel) and prints the OpenBLAS kernel and thread count it uses.
# Other processes skew both sides: check `uptime` and re-run when the machine is quiet.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build bench/FedLora.Bench -c Release -v quiet -nologo >/dev/null
echo "load: $(uptime)"
exec dotnet bench/FedLora.Bench/bin/Release/net10.0/FedLora.Bench.dll --compare "$@"
