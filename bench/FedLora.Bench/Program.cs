using BenchmarkDotNet.Running;
using FedLora.Bench;

// `--compare` prints FedLora's GEMMs against OpenBLAS's (see Compare.cs); anything else goes to
// BenchmarkDotNet (e.g. `--filter *Matmul*`, `--list flat`).
if (args.Length > 0 && args[0] == "--compare") return Compare.Run(args[1..]);
BenchmarkSwitcher.FromAssembly(typeof(GemmProblem).Assembly).Run(args, BenchConfig.Create());
return 0;
