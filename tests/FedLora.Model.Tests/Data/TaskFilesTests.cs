using FedLora.Model.Data;

namespace FedLora.Model.Tests.Data;

public class TaskFilesTests
{
    private static readonly TaskFileOptions Labels = new(["negative", "positive"]);

    [Fact]
    public void Load_DollyArray_ReadsEveryField()
    {
        using var directory = new TempDirectory();
        var path = directory.File("anything.json");
        File.WriteAllText(path, """[{"instruction": "Say hi", "context": "greeting", "response": "hi", "category": "open_qa"}]""");
        var record = Assert.Single(TaskFiles.Load(path));
        Assert.Equal(new InstructionRecord("Say hi", "greeting", "hi", "open_qa"), record.Instruction);
        Assert.False(record.IsClosedChoice);
    }

    [Fact]
    public void Load_AlpacaJsonl_MapsInputToContext_AndSkipsBlankLines()
    {
        using var directory = new TempDirectory();
        var path = directory.File("client-a.jsonl");
        File.WriteAllText(path, "{\"instruction\": \"Add\", \"input\": \"2 and 3\", \"output\": \"5\"}\n\n{\"instruction\": \"Greet\", \"output\": \"hello\"}\r\n");
        var records = TaskFiles.Load(path);
        Assert.Equal([new InstructionRecord("Add", "2 and 3", "5", ""), new InstructionRecord("Greet", "", "hello", "")], records.Select(r => r.Instruction));
    }

    [Fact]
    public void Load_ClosedChoice_AnswerAsIndexLetterOrText()
    {
        using var directory = new TempDirectory();
        var path = directory.File("mmlu.jsonl");
        File.WriteAllText(path, """
            {"question": "2+2?", "choices": ["3", "4", "5"], "answer": 1, "subject": "math"}
            {"question": "Sky?", "choices": ["green", "blue"], "answer": "B"}
            {"question": "Sun?", "choices": ["hot", "cold"], "answer": "hot", "category": "physics"}
            """);
        var records = TaskFiles.Load(path);
        Assert.Equal([1, 1, 0], records.Select(r => r.Answer));
        Assert.Equal(["4", "blue", "hot"], records.Select(r => r.Instruction.Response));
        Assert.Equal(["math", "", "physics"], records.Select(r => r.Instruction.Category));
        Assert.All(records, r => Assert.True(r.IsClosedChoice));
    }

    [Fact]
    public void Load_Classification_UsesTheDeclaredLabelSet()
    {
        using var directory = new TempDirectory();
        var path = directory.File("sentiment.json");
        File.WriteAllText(path, """[{"text": "great film", "label": "positive"}, {"text": "dull", "label": 0, "instruction": "Sentiment?"}]""");
        var records = TaskFiles.Load(path, Labels);
        Assert.Equal([1, 0], records.Select(r => r.Answer));
        Assert.All(records, r => Assert.Equal(["negative", "positive"], r.Choices!));
        Assert.Equal("great film", records[0].Instruction.Context);
        Assert.Equal("positive", records[0].Instruction.Category);
        Assert.Equal("Sentiment?", records[1].Instruction.Instruction);
    }

    [Fact]
    public void Load_ClientField_KeepsEachRecordsClient()
    {
        using var directory = new TempDirectory();
        var path = directory.File("pool.jsonl");
        File.WriteAllText(path, "{\"instruction\": \"a\", \"response\": \"b\", \"user\": \"u1\"}\n{\"instruction\": \"c\", \"response\": \"d\", \"user\": 7}\n");
        Assert.Equal(["u1", "7"], TaskFiles.Load(path, new TaskFileOptions(ClientField: "user")).Select(r => r.Client));
    }

    [Theory]
    [InlineData("bad.json", "[{\"instruction\": \"x\"", "not valid JSON")]
    [InlineData("bad.json", "[{\"instruction\": \"x\", \"response\": \"y\"}, 3]", "record 1: expected an object, found Number")]
    [InlineData("bad.json", "[{\"instruction\": \"x\", \"response\": \"y\"}, {\"instruction\": \"x\"}]", "record 1: field 'response' is missing")]
    [InlineData("bad.json", "[{\"instruction\": 5, \"response\": \"y\"}]", "record 0: field 'instruction' must be a string, found Number")]
    [InlineData("bad.json", "[{\"prompt\": \"x\", \"completion\": \"y\"}]", "record 0: no known layout")]
    [InlineData("bad.json", "[]", "holds no records")]
    [InlineData("bad.jsonl", "{\"instruction\": \"x\", \"output\": \"y\"}\n{\"instruction\": \"x\", \"output\": \"y\"", "line 2: not valid JSON")]
    [InlineData("bad.jsonl", "{\"instruction\": \"x\", \"output\": \"y\"}\n\n{\"instruction\": \"x\", \"output\": []}", "line 3: field 'output' must be a string, found Array")]
    [InlineData("bad.jsonl", "{\"question\": \"q\", \"choices\": \"a,b\", \"answer\": 0}", "line 1: field 'choices' must be an array of strings, found String")]
    [InlineData("bad.jsonl", "{\"question\": \"q\", \"choices\": [\"a\"], \"answer\": 0}", "line 1: field 'choices' must hold at least two choices, found 1")]
    [InlineData("bad.jsonl", "{\"question\": \"q\", \"choices\": [\"a\", 2], \"answer\": 0}", "line 1: field 'choices': choice 1 must be a string, found Number")]
    [InlineData("bad.jsonl", "{\"question\": \"q\", \"choices\": [\"a\", \" \"], \"answer\": 0}", "line 1: field 'choices': choice 1 is empty")]
    [InlineData("bad.jsonl", "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": 2}", "line 1: field 'answer': 2 is not an index of the 2 choices (0..1)")]
    [InlineData("bad.jsonl", "{\"question\": \"q\", \"choices\": [\"a\", \"b\"], \"answer\": \"C\"}", "line 1: field 'answer': 'C' is none of the choices ('a', 'b') nor a letter A..B")]
    [InlineData("bad.jsonl", "{\"question\": \"q\", \"choices\": [\"a\", \"b\"]}", "line 1: field 'answer' is missing")]
    [InlineData("bad.jsonl", "{\"choices\": [\"a\", \"b\"], \"answer\": 1}", "line 1: field 'question' is missing")]
    [InlineData("bad.jsonl", "{\"text\": \"t\", \"label\": \"neutral\"}", "line 1: field 'label': 'neutral' is none of the declared labels ('negative', 'positive')")]
    [InlineData("bad.jsonl", "{\"text\": \"t\", \"label\": true}", "line 1: field 'label' must be a choice's index, letter or text, found True")]
    [InlineData("bad.jsonl", "{\"label\": \"positive\"}", "line 1: field 'text' is missing")]
    public void Load_MalformedRecord_NamesFileRecordAndField(string name, string content, string problem)
    {
        using var directory = new TempDirectory();
        var path = directory.File(name);
        File.WriteAllText(path, content);
        var e = Assert.Throws<InvalidDataException>(() => TaskFiles.Load(path, Labels));
        Assert.StartsWith(path + ": ", e.Message, StringComparison.Ordinal);
        Assert.Contains(problem, e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_ClassificationWithoutLabelSet_AsksForOne()
    {
        using var directory = new TempDirectory();
        var path = directory.File("c.jsonl");
        File.WriteAllText(path, "{\"text\": \"t\", \"label\": \"x\"}");
        var e = Assert.Throws<InvalidDataException>(() => TaskFiles.Load(path));
        Assert.Contains("line 1: a classification record (text, label) needs a declared label set", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Load_MissingClientField_NamesIt()
    {
        using var directory = new TempDirectory();
        var path = directory.File("pool.jsonl");
        File.WriteAllText(path, "{\"instruction\": \"a\", \"response\": \"b\", \"user\": \"u1\"}\n{\"instruction\": \"c\", \"response\": \"d\"}\n");
        var e = Assert.Throws<InvalidDataException>(() => TaskFiles.Load(path, new TaskFileOptions(ClientField: "user")));
        Assert.Contains("line 2: field 'user' (the client id) is missing", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFolder_ShippedDolly_SameClientsAndTestAsTheDollyLoader()
    {
        var folder = RepoPaths.Data("dolly15k-fedit-10");
        var tasks = TaskFiles.LoadFolder(folder, testPath: null, heldOutFraction: 0.1, seed: 1);
        var dolly = Dolly.LoadFederated(folder);
        Assert.Equal(dolly.Clients.Count, tasks.Clients.Count);
        for (var k = 0; k < dolly.Clients.Count; k++) Assert.Equal(dolly.Clients[k], tasks.Clients[k].Select(r => r.Instruction));
        Assert.Equal(dolly.Test, tasks.Test.Select(r => r.Instruction));
    }

    [Fact]
    public void LoadFolder_AnyNames_NaturalOrder_AndHeldOutFractionFromEveryClient()
    {
        using var directory = new TempDirectory();
        string Records(string client, int n) => "[" + string.Join(",", Enumerable.Range(0, n).Select(i => $$"""{"instruction": "{{client}}{{i}}", "response": "r"}""")) + "]";
        File.WriteAllText(directory.File("site10.json"), Records("c", 10));
        File.WriteAllText(directory.File("site2.json"), Records("b", 20));
        File.WriteAllText(directory.File("alpha.jsonl"), "{\"instruction\": \"a0\", \"output\": \"r\"}\n{\"instruction\": \"a1\", \"output\": \"r\"}\n");
        File.WriteAllText(directory.File("notes.txt"), "not data");
        var tasks = TaskFiles.LoadFolder(directory.Path, null, 0.1, seed: 3);
        Assert.Equal(["alpha.jsonl", "site2.json", "site10.json"], tasks.Files.Select(Path.GetFileName));
        Assert.Equal([1, 18, 9], tasks.Clients.Select(c => c.Count));
        Assert.Equal(4, tasks.Test.Count);
        var all = tasks.Clients.SelectMany(c => c).Concat(tasks.Test).Select(r => r.Instruction.Instruction).Order().ToArray();
        Assert.Equal(32, all.Distinct().Count());
        Assert.Contains("0.1", tasks.TestSource, StringComparison.Ordinal);
    }

    [Fact]
    public void LoadFolder_TestFileInsideTheFolder_IsNotAClient()
    {
        using var directory = new TempDirectory();
        File.WriteAllText(directory.File("a.json"), """[{"instruction": "x", "response": "y"}]""");
        File.WriteAllText(directory.File("held.json"), """[{"instruction": "t", "response": "u"}]""");
        var tasks = TaskFiles.LoadFolder(directory.Path, directory.File("held.json"), 0.1, 1);
        Assert.Single(tasks.Clients);
        Assert.Equal("t", Assert.Single(tasks.Test).Instruction.Instruction);
    }

    [Fact]
    public void NaturalOrder_ComparesDigitRunsByValue() =>
        Assert.Equal(["a1", "a2", "a10", "b", "b01x", "b2"], new[] { "a10", "b2", "a2", "b", "a1", "b01x" }.Order(NaturalOrder.Instance));

    [Fact]
    public void Sample_IsSeeded_KeepsOrder_AndPartitions()
    {
        var items = Enumerable.Range(0, 50).ToArray();
        var (train, heldOut) = DataSplit.Sample(items, 0.2, seed: 5);
        Assert.Equal(10, heldOut.Length);
        Assert.Equal(items, train.Concat(heldOut).Order());
        Assert.Equal(train.Order(), train);
        Assert.Equal(heldOut, DataSplit.Sample(items, 0.2, seed: 5).HeldOut);
        Assert.NotEqual(heldOut, DataSplit.Sample(items, 0.2, seed: 6).HeldOut);
    }
}
