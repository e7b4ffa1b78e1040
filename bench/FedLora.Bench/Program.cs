using BenchmarkDotNet.Running;
using FedLora.Bench;

// `--compare` prints FedLora's GEMMs against OpenBLAS's (see Compare.cs), `--compare-lora-step` the GPT's
// LoRA training step against PyTorch's (CompareLoraStep.cs), `--profile-lora-step` that step op by op
// (ProfileLoraStep.cs); anything else goes to
// BenchmarkDotNet (e.g. `--filter *Matmul*`, `--list flat`).
if (args.Length > 0 && args[0] == "--compare") return Compare.Run(args[1..]);
if (args.Length > 0 && args[0] == "--compare-lora-step") return CompareLoraStep.Run(args[1..]);
if (args.Length > 0 && args[0] == "--profile-lora-step") return ProfileLoraStep.Run(args[1..]);
BenchmarkSwitcher.FromAssembly(typeof(GemmProblem).Assembly).Run(args, BenchConfig.Create());
return 0;
