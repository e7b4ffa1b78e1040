// FedLora as a library: FSLoRA over the shipped Dolly-15k clients from the shipped base model, two
// short rounds, then the global adapter and the fine-tuned model saved. Usage:
//   dotnet run --project samples/Quickstart -c Release [-- REPOSITORY_ROOT [OUTPUT_FOLDER]]
using FedLora.Runtime;

var root = args.Length > 0 ? args[0] : FindRepositoryRoot();
var output = args.Length > 1 ? Directory.CreateDirectory(args[1]).FullName : Directory.CreateTempSubdirectory("fedlora-quickstart-").FullName;

var baseModel = BaseModel.Load(Path.Combine(root, "models", "base.safetensors"));
var clients = ClientDataset.FromFolder(Path.Combine(root, "data", "dolly15k-fedit-10"), [64, 32, 16, 16, 8, 8, 4, 4, 4, 4]);
var settings = new FederatedJobSettings { Method = "fslora", Rounds = 2, ClientsPerRound = 2, LocalSteps = 2, Batch = 2, Context = 64 };

using var job = FederatedJob.Create(baseModel, clients, settings);
job.Run(round => Console.WriteLine(
    $"round {round.Round}: held-out loss {round.Evaluation["all"]:F4}, {round.DownloadBytes:N0} bytes down, {round.UploadBytes:N0} bytes up"));
job.SaveAdapter(Path.Combine(output, "adapter_model.safetensors"));
job.SaveModel(Path.Combine(output, "model.safetensors"));
Console.WriteLine($"saved the global adapter and the fine-tuned model in {output}");

static string FindRepositoryRoot()
{
    for (var directory = new DirectoryInfo(Environment.CurrentDirectory); directory is not null; directory = directory.Parent)
    {
        if (File.Exists(Path.Combine(directory.FullName, "FedLora.sln"))) return directory.FullName;
    }
    throw new DirectoryNotFoundException($"no FedLora.sln above {Environment.CurrentDirectory}: pass the repository root as the first argument");
}
