using FedLora.Model.Data;

namespace FedLora.Model.Tests.Data;

public class DollyTests
{
    [Fact]
    public void LoadFederated_ShippedFolder_HasTenClientsAndTestSet()
    {
        var data = Dolly.LoadFederated(RepoPaths.Data("dolly15k-fedit-10"));
        Assert.Equal([1820, 2831, 1773, 1299, 2253, 565, 1518, 896, 1533, 443], data.Clients.Select(c => c.Count));
        Assert.Equal(80, data.Test.Count);
        Assert.Equal(8, data.Test.Select(r => r.Category).Distinct().Count());
        var first = data.Test[0];
        Assert.Equal("What are some common mushrooms used in cooking?", first.Instruction);
        Assert.Equal("", first.Context);
        Assert.Equal("brainstorming", first.Category);
        Assert.All(data.Clients.SelectMany(c => c), r => Assert.False(string.IsNullOrWhiteSpace(r.Instruction)));
    }

    [Fact]
    public void Load_MissingOptionalFields_ReadAsEmpty()
    {
        using var directory = new TempDirectory();
        var path = directory.File("a.json");
        File.WriteAllText(path, """[{"instruction": "Say hi", "response": "hi", "context": null}]""");
        Assert.Equal([new InstructionRecord("Say hi", "", "hi", "")], Dolly.Load(path));
    }

    [Theory]
    [InlineData("[{\"instruction\": \"x\"", "not valid JSON")]
    [InlineData("{\"instruction\": \"x\"}", "expected a JSON array of records, found Object")]
    [InlineData("[{\"instruction\": \"x\", \"response\": \"y\"}, 3]", "record 1: expected an object, found Number")]
    [InlineData("[{\"instruction\": \"x\"}]", "record 0: field 'response' is missing")]
    [InlineData("[{\"instruction\": 5, \"response\": \"y\"}]", "record 0: field 'instruction' must be a string, found Number")]
    [InlineData("[{\"instruction\": \"x\", \"response\": \"y\", \"category\": []}]", "record 0: field 'category' must be a string, found Array")]
    public void Load_MalformedFile_NamesPathRecordAndField(string json, string problem)
    {
        using var directory = new TempDirectory();
        var path = directory.File("client.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<InvalidDataException>(() => Dolly.Load(path));
        Assert.StartsWith(path + ": ", e.Message, StringComparison.Ordinal);
        Assert.Contains(problem, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_MissingFile_NamesPath()
    {
        var e = Assert.Throws<FileNotFoundException>(() => Dolly.Load("/no/such/local_training_0.json"));
        Assert.Contains("/no/such/local_training_0.json", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFederated_GapInClientNumbers_NamesMissingFile()
    {
        using var directory = new TempDirectory();
        const string record = """[{"instruction": "x", "response": "y"}]""";
        File.WriteAllText(directory.File("local_training_0.json"), record);
        File.WriteAllText(directory.File("local_training_2.json"), record);
        File.WriteAllText(directory.File("global_test.json"), record);
        var e = Assert.Throws<FileNotFoundException>(() => Dolly.LoadFederated(directory.Path));
        Assert.Contains("local_training_1.json is missing", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFederated_MissingTestSetOrFolder_Throws()
    {
        using var directory = new TempDirectory();
        File.WriteAllText(directory.File("local_training_0.json"), """[{"instruction": "x", "response": "y"}]""");
        var e = Assert.Throws<FileNotFoundException>(() => Dolly.LoadFederated(directory.Path));
        Assert.Contains("global_test.json", e.Message, StringComparison.Ordinal);
        Assert.Throws<DirectoryNotFoundException>(() => Dolly.LoadFederated(Path.Combine(directory.Path, "nope")));
    }
}
