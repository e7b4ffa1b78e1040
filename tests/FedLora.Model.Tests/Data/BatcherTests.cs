using FedLora.Model.Data;
using FedLora.Model.Tokenization;

namespace FedLora.Model.Tests.Data;

public class BatcherTests
{
    private const int Eot = ByteTokenizer.EndOfText;

    private static int[] Row(int[] values, int row, int t) => values.AsSpan(row * t, t).ToArray();

    /// <summary>An example of promptLength prompt tokens and responseLength counted tokens, values 0, 1, 2, ...</summary>
    private static InstructionExample Example(int promptLength, int responseLength, int offset = 0) =>
        new([.. Enumerable.Range(offset, promptLength + responseLength)], promptLength);

    [Fact]
    public void InstructionRow_ShortExample_PadsAndCountsResponseOnly()
    {
        var batch = InstructionBatcher.InOrder([Example(4, 3)], 1, 10).Single();
        // tokens 0..6, prompt 0..3: inputs 0..6 then padding; targets -1 until position 3 predicts token 4.
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, Eot, Eot, Eot], batch.Tokens);
        Assert.Equal([-1, -1, -1, 4, 5, 6, -1, -1, -1, -1], batch.Targets);
        Assert.Equal(3, batch.CountTargets());
    }

    [Fact]
    public void InstructionRow_ExactFit_UsesWholeExample()
    {
        var batch = InstructionBatcher.InOrder([Example(2, 5)], 1, 6).Single();
        Assert.Equal([0, 1, 2, 3, 4, 5], batch.Tokens);
        Assert.Equal([-1, 2, 3, 4, 5, 6], batch.Targets);
    }

    [Fact]
    public void InstructionRow_LongPromptAndResponse_KeepsHalfWindowOfPrompt()
    {
        var example = Example(20, 20);
        Assert.Equal(16, InstructionBatcher.WindowStart(example, 8));
        var batch = InstructionBatcher.InOrder([example], 1, 8).Single();
        Assert.Equal([16, 17, 18, 19, 20, 21, 22, 23], batch.Tokens);
        Assert.Equal([-1, -1, -1, 20, 21, 22, 23, 24], batch.Targets);
    }

    [Fact]
    public void InstructionRow_LongPromptShortResponse_EndsAtExampleEnd()
    {
        var example = Example(30, 2);
        Assert.Equal(23, InstructionBatcher.WindowStart(example, 8));
        var batch = InstructionBatcher.InOrder([example], 1, 8).Single();
        Assert.Equal([23, 24, 25, 26, 27, 28, 29, 30], batch.Tokens);
        Assert.Equal([-1, -1, -1, -1, -1, -1, 30, 31], batch.Targets);
    }

    [Fact]
    public void InstructionRow_ShortPromptLongResponse_CutsResponseTail()
    {
        var example = Example(3, 40);
        Assert.Equal(0, InstructionBatcher.WindowStart(example, 8));
        var batch = InstructionBatcher.InOrder([example], 1, 8).Single();
        Assert.Equal([-1, -1, 3, 4, 5, 6, 7, 8], batch.Targets);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(17)]
    [InlineData(64)]
    public void InstructionRows_ShippedDolly_EveryRowCountsAResponseToken(int context)
    {
        var records = Dolly.Load(RepoPaths.Data("dolly15k-fedit-10", "global_test.json"));
        var examples = records.Select(InstructionTemplate.Tokenize).ToList();
        foreach (var batch in InstructionBatcher.InOrder(examples, 1, context))
        {
            Assert.True(batch.CountTargets() >= 1);
        }
    }

    [Fact]
    public void InstructionBatcher_OneEpoch_VisitsEveryExampleOnce()
    {
        var examples = Enumerable.Range(0, 10).Select(i => Example(1, 1, offset: 10 * i)).ToList();
        var batcher = new InstructionBatcher(examples, 5, 4, seed: 7);
        var batch = new TokenBatch(5, 4);
        var seen = new List<int>();
        for (var step = 0; step < 2; step++)
        {
            batcher.NextBatch(batch);
            for (var row = 0; row < 5; row++) seen.Add(batch.Tokens[row * 4] / 10);
        }
        Assert.Equal(Enumerable.Range(0, 10), seen.Order());
        Assert.NotEqual(Enumerable.Range(0, 10), seen);
        Assert.Equal(0, batcher.Epoch);
        batcher.NextBatch(batch);
        Assert.Equal(1, batcher.Epoch);
    }

    [Fact]
    public void InstructionBatcher_SameSeed_SameBatches()
    {
        var examples = Enumerable.Range(0, 13).Select(i => Example(i % 5, 3 + i % 4, offset: i)).ToList();
        Assert.Equal(Draw(new InstructionBatcher(examples, 3, 6, 42), 10), Draw(new InstructionBatcher(examples, 3, 6, 42), 10));
        Assert.NotEqual(Draw(new InstructionBatcher(examples, 3, 6, 42), 10), Draw(new InstructionBatcher(examples, 3, 6, 43), 10));
    }

    [Fact]
    public void InstructionInOrder_LastBatch_PaddedWithUncountedRows()
    {
        var examples = Enumerable.Range(0, 5).Select(i => Example(2, 2, offset: 10 * i)).ToList();
        var batches = InstructionBatcher.InOrder(examples, 2, 4).ToList();
        Assert.Equal(3, batches.Count);
        Assert.Equal([40, 41, 42, 43], Row(batches[2].Tokens, 0, 4));
        Assert.Equal([Eot, Eot, Eot, Eot], Row(batches[2].Tokens, 1, 4));
        Assert.Equal([-1, -1, -1, -1], Row(batches[2].Targets, 1, 4));
    }

    [Fact]
    public void TextBatcher_Windows_AreAlignedAndShiftedByOne()
    {
        var tokens = Enumerable.Range(0, 21).ToArray();
        var batcher = new TextBatcher(tokens, 5, 4, seed: 1);
        Assert.Equal(5, batcher.WindowCount);
        var batch = new TokenBatch(5, 4);
        batcher.NextBatch(batch);
        var starts = new List<int>();
        for (var row = 0; row < 5; row++)
        {
            var inputs = Row(batch.Tokens, row, 4);
            Assert.Equal(0, inputs[0] % 4);
            Assert.Equal(Enumerable.Range(inputs[0], 4), inputs);
            Assert.Equal(Enumerable.Range(inputs[0] + 1, 4), Row(batch.Targets, row, 4));
            starts.Add(inputs[0]);
        }
        Assert.Equal([0, 4, 8, 12, 16], starts.Order());
        Assert.Equal(20, batch.CountTargets());
    }

    [Fact]
    public void TextBatcher_SameSeed_SameBatches()
    {
        var tokens = ByteTokenizer.Instance.Encode(string.Concat(Enumerable.Repeat("To be, or not to be: that is the question. ", 20)));
        Assert.Equal(Draw(new TextBatcher(tokens, 4, 16, 5), 20), Draw(new TextBatcher(tokens, 4, 16, 5), 20));
        Assert.NotEqual(Draw(new TextBatcher(tokens, 4, 16, 5), 20), Draw(new TextBatcher(tokens, 4, 16, 6), 20));
    }

    [Fact]
    public void TextBatcher_TextShorterThanOneWindow_Throws()
    {
        Assert.Throws<ArgumentException>(() => new TextBatcher([1, 2, 3, 4], 1, 4, 0));
        Assert.Equal(1, new TextBatcher([1, 2, 3, 4, 5], 1, 4, 0).WindowCount);
    }

    [Fact]
    public void TextInOrder_AllWindowsInOrder_LastBatchPadded()
    {
        var tokens = Enumerable.Range(0, 13).ToArray();
        var batches = TextBatcher.InOrder(tokens, 2, 4).ToList();
        Assert.Equal(2, batches.Count);
        Assert.Equal([0, 1, 2, 3, 4, 5, 6, 7], batches[0].Tokens);
        Assert.Equal([1, 2, 3, 4, 5, 6, 7, 8], batches[0].Targets);
        Assert.Equal([8, 9, 10, 11, Eot, Eot, Eot, Eot], batches[1].Tokens);
        Assert.Equal([9, 10, 11, 12, -1, -1, -1, -1], batches[1].Targets);
    }

    [Fact]
    public void NextBatch_WrongShape_Throws()
    {
        var batcher = new TextBatcher(Enumerable.Range(0, 100).ToArray(), 2, 4, 0);
        var e = Assert.Throws<ArgumentException>(() => batcher.NextBatch(new TokenBatch(2, 5)));
        Assert.Contains("(2,5)", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Tail_TenPercent_SplitsOffTheEnd()
    {
        var (train, heldOut) = DataSplit.Tail(Enumerable.Range(0, 100).ToArray(), 0.1);
        Assert.Equal(Enumerable.Range(0, 90), train);
        Assert.Equal(Enumerable.Range(90, 10), heldOut);
        var (one, other) = DataSplit.Tail([1, 2], 0.01);
        Assert.Equal([1], one);
        Assert.Equal([2], other);
        Assert.Throws<ArgumentOutOfRangeException>(() => DataSplit.Tail([1, 2, 3], 1.0));
        Assert.Throws<ArgumentException>(() => DataSplit.Tail([1], 0.5));
    }

    private static List<int[]> Draw(ITokenBatchSource source, int batches)
    {
        var result = new List<int[]>();
        var batch = new TokenBatch(source.BatchSize, source.Context);
        for (var i = 0; i < batches; i++)
        {
            source.NextBatch(batch);
            result.Add([.. batch.Tokens, .. batch.Targets]);
        }
        return result;
    }
}
