namespace FedLora.Kernels.Tests;

public class AdamWSettingsTests
{
    [Fact]
    public void New_NoArguments_GivesPyTorchDefaults()
    {
        var settings = new AdamWSettings();
        Assert.Equal(new AdamWSettings(LearningRate: 1e-3f, Beta1: 0.9f, Beta2: 0.999f, Epsilon: 1e-8f, WeightDecay: 0f), settings);
    }
}
