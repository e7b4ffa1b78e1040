namespace FedLora.Cli;

/// <summary>Where the shipped data and base model are: the repository the command runs from.</summary>
internal static class Paths
{
    /// <summary>The repository root: the first folder holding FedLora.sln above the working directory or the executable.</summary>
    public static string? RepositoryRoot()
    {
        foreach (var start in new[] { Environment.CurrentDirectory, AppContext.BaseDirectory })
        {
            for (var directory = new DirectoryInfo(start); directory is not null; directory = directory.Parent)
            {
                if (File.Exists(Path.Combine(directory.FullName, "FedLora.sln"))) return directory.FullName;
            }
        }
        return null;
    }

    /// <summary>The shipped data folder (data/ of the repository).</summary>
    public static string DefaultDataDirectory => Path.Combine(RepositoryRoot() ?? Environment.CurrentDirectory, "data");

    /// <summary>The shipped base model.</summary>
    public static string DefaultBaseModel => Path.Combine(RepositoryRoot() ?? Environment.CurrentDirectory, "models", "base.safetensors");

    /// <summary>A fresh output folder under runs/ named after the verb and the time.</summary>
    public static string DefaultOutput(string verb) =>
        Path.Combine(RepositoryRoot() ?? Environment.CurrentDirectory, "runs", $"{verb}-{DateTime.Now:yyyyMMdd-HHmmss}");

    public static string RequireFile(string path, string what, string hint)
    {
        if (!File.Exists(path)) throw new UsageException($"{what} '{path}' does not exist. {hint}");
        return path;
    }

    public static string RequireDirectory(string path, string what, string hint)
    {
        if (!Directory.Exists(path)) throw new UsageException($"{what} '{path}' does not exist. {hint}");
        return path;
    }
}
