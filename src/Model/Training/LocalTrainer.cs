using FedLora.Kernels;
using FedLora.Model.Data;

namespace FedLora.Model.Training;

/// <summary>Hyper-parameters of a local training run.</summary>
/// <param name="Steps">Optimizer steps.</param>
/// <param name="LearningRate">Peak learning rate.</param>
/// <param name="WarmupSteps">Linear warmup steps.</param>
/// <param name="MinimumLearningRateFraction">The cosine schedule's final rate as a fraction of the peak (1: constant).</param>
/// <param name="WeightDecay">AdamW's decoupled weight decay.</param>
/// <param name="MaxGradientNorm">Clip the global gradient norm to this (0: no clipping).</param>
public sealed record TrainingOptions(
    int Steps, float LearningRate, int WarmupSteps = 0, float MinimumLearningRateFraction = 1f, float WeightDecay = 0f, float MaxGradientNorm = 1f)
{
    /// <summary>Throws with a message naming the bad option.</summary>
    public void Validate()
    {
        if (Steps < 0) throw new ArgumentOutOfRangeException(nameof(Steps), Steps, "the number of steps must be >= 0");
        if (!(LearningRate > 0) || !float.IsFinite(LearningRate)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "the learning rate must be finite and > 0");
        if (WarmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(WarmupSteps), WarmupSteps, "the warmup steps must be >= 0");
        if (!(MinimumLearningRateFraction is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(MinimumLearningRateFraction), MinimumLearningRateFraction, "the final learning-rate fraction must be in [0, 1]");
        if (!(WeightDecay >= 0) || !float.IsFinite(WeightDecay)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "the weight decay must be finite and >= 0");
        if (!(MaxGradientNorm >= 0) || !float.IsFinite(MaxGradientNorm)) throw new ArgumentOutOfRangeException(nameof(MaxGradientNorm), MaxGradientNorm, "the gradient-norm limit must be finite and >= 0");
    }

    /// <summary>The learning-rate schedule these options describe.</summary>
    public LearningRateSchedule Schedule => new(LearningRate, WarmupSteps, Steps, MinimumLearningRateFraction);
}

/// <summary>What one training step did.</summary>
/// <param name="Step">0-based step index.</param>
/// <param name="Loss">Mean loss of the step's batch (before the update).</param>
/// <param name="GradientNorm">Global gradient L2 norm before clipping.</param>
/// <param name="LearningRate">The rate applied.</param>
/// <param name="Tokens">Counted target tokens in the batch.</param>
public readonly record struct StepReport(int Step, float Loss, float GradientNorm, float LearningRate, int Tokens);

/// <summary>
/// Trains what a <see cref="Gpt"/> is set to train (its adapters, or its base weights when
/// <see cref="Gpt.TrainBase"/>) with AdamW on batches from a seeded source.
/// </summary>
public static class LocalTrainer
{
    /// <summary>
    /// Runs <see cref="TrainingOptions.Steps"/> steps. <paramref name="parameters"/> and
    /// <paramref name="gradients"/> are the trainable buffer and its gradient (the adapters' or the
    /// model's); <paramref name="mask"/> freezes elements whose mask is 0; <paramref name="regularizer"/>,
    /// when given, runs after each backward pass and adds its penalty's gradient. Returns the mean loss
    /// over the steps.
    /// </summary>
    public static float Train(Gpt model, BufferView parameters, BufferView gradients, ITokenBatchSource source, TrainingOptions options,
        BufferView? mask = null, Action? regularizer = null, Action<StepReport>? onStep = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(source);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (source.BatchSize > model.MaxBatch || source.Context > model.MaxTime)
        {
            throw new ArgumentException(
                $"the data makes (B,T) = ({source.BatchSize},{source.Context}) batches but the model holds at most ({model.MaxBatch},{model.MaxTime})", nameof(source));
        }
        using var optimizer = new AdamWOptimizer(model.Backend, parameters.Length,
            new AdamWSettings(options.LearningRate, WeightDecay: options.WeightDecay), options.MaxGradientNorm);
        var schedule = options.Schedule;
        var batch = new TokenBatch(source.BatchSize, source.Context);
        double lossSum = 0;
        var counted = 0;
        for (var step = 0; step < options.Steps; step++)
        {
            source.NextBatch(batch);
            model.ZeroGradients();
            var loss = model.Forward(batch.BatchSize, batch.Context, batch.Tokens, batch.Targets, training: true);
            var tokens = batch.CountTargets();
            if (tokens == 0) continue;
            model.Backward();
            regularizer?.Invoke();
            var rate = schedule.At(step);
            var norm = optimizer.Step(parameters, gradients, rate, mask);
            lossSum += loss;
            counted++;
            onStep?.Invoke(new StepReport(step, loss, norm, rate, tokens));
        }
        return counted == 0 ? float.NaN : (float)(lossSum / counted);
    }

    /// <summary>
    /// The mean loss per counted target token over <paramref name="batches"/> (each batch's mean
    /// weighted by its count), and that count.
    /// </summary>
    public static (double Loss, long Tokens) Evaluate(Gpt model, IEnumerable<TokenBatch> batches)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(batches);
        double sum = 0;
        long tokens = 0;
        foreach (var batch in batches)
        {
            var count = batch.CountTargets();
            if (count == 0) continue;
            var loss = model.Forward(batch.BatchSize, batch.Context, batch.Tokens, batch.Targets);
            sum += (double)loss * count;
            tokens += count;
        }
        return (tokens == 0 ? double.NaN : sum / tokens, tokens);
    }
}
