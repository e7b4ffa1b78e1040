using FedLora.Model.Data;
using FedLora.Model.Tokenization;

namespace FedLora.Model.Tests.Data;

public class InstructionTemplateTests
{
    [Fact]
    public void FormatPrompt_WithoutContext_HasInstructionAndResponseHeader()
    {
        Assert.Equal("### Instruction:\nName a fruit.\n\n### Response:\n", InstructionTemplate.FormatPrompt(" Name a fruit.\n", "  "));
    }

    [Fact]
    public void FormatPrompt_WithContext_PutsContextFirst()
    {
        Assert.Equal("### Context:\nApples are red.\n\n### Instruction:\nWhat colour are apples?\n\n### Response:\n",
            InstructionTemplate.FormatPrompt("What colour are apples?", "Apples are red.\n"));
    }

    [Fact]
    public void Tokenize_Record_IsPromptThenResponseThenEndOfText()
    {
        var example = InstructionTemplate.Tokenize(new InstructionRecord("Say hi", "", " hi \n", "open_qa"));
        var prompt = ByteTokenizer.Instance.Encode("### Instruction:\nSay hi\n\n### Response:\n");
        Assert.Equal([.. prompt, 'h', 'i', ByteTokenizer.EndOfText], example.Tokens);
        Assert.Equal(prompt.Length, example.PromptLength);
        Assert.Equal(3, example.ResponseLength);
        Assert.Equal("### Instruction:\nSay hi\n\n### Response:\nhi<|endoftext|>", ByteTokenizer.Instance.Decode(example.Tokens));
    }

    [Fact]
    public void Tokenize_EmptyResponse_StillCountsEndOfText()
    {
        var example = InstructionTemplate.Tokenize(new InstructionRecord("x", "", "", ""));
        Assert.Equal(1, example.ResponseLength);
        Assert.Equal(ByteTokenizer.EndOfText, example.Tokens[^1]);
    }
}
