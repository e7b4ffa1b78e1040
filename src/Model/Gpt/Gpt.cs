using FedLora.Kernels;
using FedLora.Lora;

namespace FedLora.Model;

/// <summary>
/// A GPT-2-style decoder (token + learned position embeddings, L pre-LayerNorm blocks of causal
/// multi-head attention with a fused qkv projection and a 4C tanh-GELU MLP, final LayerNorm, head
/// tied to the token embedding) trained by hand-written forward and backward passes through a
/// <see cref="Backend"/>, with optional LoRA adapters on its linear layers.
/// </summary>
/// <remarks>
/// Memory follows llm.c: base weights in one buffer (<see cref="Parameters"/>), their gradients in
/// another (only when <see cref="TrainBase"/>), adapters and their gradients in an
/// <see cref="AdapterSet"/>, and activations in one buffer sized for (maxB, maxT) at construction.
/// The backward pass keeps one gradient of the residual stream and reuses one set of per-block
/// scratch gradients for every block.
/// The language-model head and its cross-entropy run over chunks of at most <see cref="LogitRows"/>
/// rows, so at real vocabulary sizes (GPT-2's V = 50,257) the (B*T, V) logits, probabilities and
/// their gradient are never held whole; a chunk's logits gradient overwrites its logits, which the
/// softmax has used. A forward pass told that a backward pass follows
/// (<c>training: true</c>, base frozen) computes each chunk's part of d(loss)/d(lnf) while that
/// chunk's probabilities are at hand; otherwise the backward pass recomputes each chunk's logits (all
/// but the last chunk's, whose probabilities the forward pass leaves in place). Either way the same ops run on the
/// same values, so the gradients are the same bit for bit. When every row fits in one chunk (the
/// byte-level model) nothing is recomputed and the ops are those of an unchunked head.
/// </remarks>
public sealed class Gpt : IDisposable
{
    private const int Qkv = 0, AttentionProjection = 1, MlpUp = 2, MlpDown = 3;

    private readonly Weights _weights;
    private Weights? _weightGrads;
    private readonly Activations _acts;
    private readonly GradientScratch _grads;
    private readonly int[] _adapterOf;
    private DeviceBuffer? _parameterGradients;
    private DeviceBuffer? _loraHidden;
    private int _loraHiddenWidth;
    private int[] _tokens = [];
    private int[] _targets = [];
    private int _batch, _time, _counted;
    private bool _haveTargets;
    private int _logitsFirst, _logitsRows, _probabilitiesFirst, _probabilitiesRows;
    private bool _headGradientDone;

    /// <summary>
    /// Floats of logits the head holds at once when the caller does not choose (64 MiB; its
    /// probabilities take as many again).
    /// </summary>
    public const int DefaultLogitBudget = 1 << 24;

    /// <summary>
    /// Allocates a zero-initialised model and activations for batches of up to (maxBatch, maxTime). The
    /// head computes at most <paramref name="logitRows"/> rows of logits at once (default: every row
    /// when maxBatch*maxTime*V fits in <see cref="DefaultLogitBudget"/> floats, else the fewest chunks
    /// that fit, of equal rows: GPT-2's V = 50,257 at B*T = 1024 makes 4 chunks of 256 rows).
    /// </summary>
    public Gpt(Backend backend, GptConfig config, int maxBatch, int maxTime, int? logitRows = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(config);
        config.Validate();
        if (maxBatch <= 0) throw new ArgumentOutOfRangeException(nameof(maxBatch), maxBatch, "the batch size must be > 0");
        if (maxTime <= 0 || maxTime > config.ContextLength)
        {
            throw new ArgumentOutOfRangeException(nameof(maxTime), maxTime, $"the sequence length must be in [1, {config.ContextLength}] (the context length)");
        }
        Backend = backend;
        Config = config;
        Layout = new GptParameters(config);
        MaxBatch = maxBatch;
        MaxTime = maxTime;
        var rows = checked(maxBatch * maxTime);
        if (logitRows is { } chosen && chosen <= 0) throw new ArgumentOutOfRangeException(nameof(logitRows), chosen, "the logit rows per chunk must be > 0");
        var chunks = (rows + Math.Max(1, DefaultLogitBudget / config.VocabSize) - 1) / Math.Max(1, DefaultLogitBudget / config.VocabSize);
        LogitRows = Math.Min(rows, logitRows ?? (rows + chunks - 1) / chunks);
        Parameters = backend.Allocate(Layout.Length);
        _weights = new Weights(Layout, Parameters);
        _acts = new Activations(backend, config, rows, maxBatch, LogitRows);
        _grads = new GradientScratch(backend, config, rows);
        _adapterOf = new int[config.Layers * 4];
        Array.Fill(_adapterOf, -1);
    }

    /// <summary>The backend every op runs on.</summary>
    public Backend Backend { get; }

    /// <summary>The model's shape.</summary>
    public GptConfig Config { get; }

    /// <summary>Names and offsets of the base tensors in <see cref="Parameters"/>.</summary>
    public GptParameters Layout { get; }

    /// <summary>The largest batch a forward pass takes.</summary>
    public int MaxBatch { get; }

    /// <summary>The longest sequence a forward pass takes.</summary>
    public int MaxTime { get; }

    /// <summary>All base weights, in <see cref="Layout"/>'s order.</summary>
    public DeviceBuffer Parameters { get; }

    /// <summary>The adapters in use, or null.</summary>
    public AdapterSet? Adapters { get; private set; }

    /// <summary>Whether the backward pass computes base-weight gradients (pretraining, full fine-tuning).</summary>
    public bool TrainBase { get; set; }

    /// <summary>Gradients of the base weights (allocated on first use).</summary>
    public DeviceBuffer ParameterGradients => _parameterGradients ??= Backend.Allocate(Layout.Length);

    private Weights? WeightGrads => TrainBase ? _weightGrads ??= new Weights(Layout, ParameterGradients) : null;

    /// <summary>The most rows of logits the head holds at once (B*T rows are computed in chunks of this many).</summary>
    public int LogitRows { get; }

    /// <summary>
    /// The (B,T,V) logits of the last forward pass, when its B*T rows fit in one chunk of
    /// <see cref="LogitRows"/> (computed again if the head's gradient has used their slot since);
    /// otherwise use <see cref="CopyLogits"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The last pass's logits were computed in chunks.</exception>
    public BufferView Logits
    {
        get
        {
            var n = _batch * _time;
            if (_logitsFirst != 0 || _logitsRows != n)
            {
                if (n > LogitRows)
                {
                    throw new InvalidOperationException(
                        $"the last forward pass's {n} rows of logits were computed in chunks of {LogitRows} rows (V = {Config.VocabSize}) and are not held whole; use CopyLogits(row, destination)");
                }
                HeadLogits(0, n);
                (_logitsFirst, _logitsRows) = (0, n);
            }
            return _acts.Logits(n, Config.VocabSize);
        }
    }

    /// <summary>
    /// Copies the V logits of row <paramref name="row"/> (= b*T + t) of the last forward pass into
    /// <paramref name="destination"/>, computing them again when that row's chunk is no longer held.
    /// </summary>
    public void CopyLogits(int row, Span<float> destination)
    {
        var n = _batch * _time;
        if (n == 0) throw new InvalidOperationException("CopyLogits needs a forward pass first");
        if ((uint)row >= (uint)n) throw new ArgumentOutOfRangeException(nameof(row), row, $"the row must be in [0, {n}) (B*T of the last forward pass)");
        var v = Config.VocabSize;
        if (destination.Length != v) throw new ArgumentException($"destination must hold V = {v} floats, got {destination.Length}", nameof(destination));
        if (row < _logitsFirst || row >= _logitsFirst + _logitsRows)
        {
            // One row only: the held chunk's probabilities (which Backward may still use) are not touched.
            HeadLogits(row, 1);
            (_logitsFirst, _logitsRows) = (row, 1);
        }
        Backend.Download(_acts.Logits(_logitsRows, v).Slice((row - _logitsFirst) * v, v), destination);
    }

    /// <summary>Bytes this model holds on its backend (weights, gradients, activations, adapters).</summary>
    public long AllocatedBytes =>
        4L * (Parameters.Length + (_parameterGradients?.Length ?? 0) + _acts.Buffer.Length + _grads.Buffer.Length + (_loraHidden?.Length ?? 0));

    /// <summary>Fills the base weights with GPT-2's initialisation.</summary>
    public void InitializeParameters(Random random) => Backend.Upload(Layout.Initialize(random), Parameters);

    /// <summary>
    /// Attaches <paramref name="adapters"/> (or detaches with null). Every module must be one of the
    /// model's adaptable linear layers with the same shape.
    /// </summary>
    public void Attach(AdapterSet? adapters)
    {
        var adapterOf = new int[Config.Layers * 4];
        Array.Fill(adapterOf, -1);
        if (adapters is not null)
        {
            if (!ReferenceEquals(adapters.Backend, Backend)) throw new ArgumentException("the adapters live on another backend than the model", nameof(adapters));
            var positions = new Dictionary<string, (int Slot, LoraModuleSpec Spec)>();
            var all = Layout.LoraModules(LoraTargets.All);
            for (var i = 0; i < all.Count; i++) positions[all[i].Name] = (i, all[i]);
            for (var m = 0; m < adapters.Modules.Count; m++)
            {
                var module = adapters.Modules[m];
                if (!positions.TryGetValue(module.Name, out var position))
                {
                    throw new ArgumentException($"adapter module '{module.Name}' is not a linear layer of this GPT", nameof(adapters));
                }
                if (position.Spec != module)
                {
                    throw new ArgumentException(
                        $"adapter module '{module.Name}' is {module.OutFeatures}x{module.InFeatures} but the layer is {position.Spec.OutFeatures}x{position.Spec.InFeatures}",
                        nameof(adapters));
                }
                adapterOf[position.Slot] = m;
            }
        }
        // Only a fully checked set replaces the current one: a refused set leaves the model as it was.
        adapterOf.CopyTo(_adapterOf, 0);
        Adapters = adapters;
    }

    /// <summary>
    /// Runs the model on tokens (B,T) and, when <paramref name="targets"/> is given, the loss: the mean
    /// of -log p(target) over positions whose target is not -1. Returns that mean (NaN when no
    /// targets, or none counted).
    /// </summary>
    /// <param name="batch">B, at most <see cref="MaxBatch"/>.</param>
    /// <param name="time">T, at most <see cref="MaxTime"/>.</param>
    /// <param name="tokens">The (B,T) input ids, row-major.</param>
    /// <param name="targets">The (B,T) target ids (-1: not counted), or empty for logits only.</param>
    /// <param name="training">
    /// Whether <see cref="Backward"/> follows. With targets and the base frozen (not <see cref="TrainBase"/>),
    /// the head then computes its gradient chunk by chunk during this pass, while each chunk's
    /// probabilities are at hand, and the backward pass does not compute the logits again. It costs a
    /// pass that only evaluates one more matmul per chunk, so evaluation leaves it false.
    /// </param>
    public float Forward(int batch, int time, ReadOnlySpan<int> tokens, ReadOnlySpan<int> targets = default, bool training = false)
    {
        if (batch <= 0 || batch > MaxBatch) throw new ArgumentOutOfRangeException(nameof(batch), batch, $"the batch must be in [1, {MaxBatch}]");
        if (time <= 0 || time > MaxTime) throw new ArgumentOutOfRangeException(nameof(time), time, $"the sequence length must be in [1, {MaxTime}]");
        var n = batch * time;
        if (tokens.Length != n) throw new ArgumentException($"tokens must hold B*T = {n} ids, got {tokens.Length}", nameof(tokens));
        if (!targets.IsEmpty && targets.Length != n) throw new ArgumentException($"targets must hold B*T = {n} ids, got {targets.Length}", nameof(targets));
        EnsureLoraHidden();
        _batch = batch;
        _time = time;
        if (_tokens.Length != n)
        {
            _tokens = new int[n];
            _targets = new int[n];
        }
        tokens.CopyTo(_tokens);
        _haveTargets = !targets.IsEmpty;
        if (_haveTargets) targets.CopyTo(_targets);

        var (b, t, c, v, nh) = (batch, time, Config.Channels, Config.VocabSize, Config.Heads);
        var backend = Backend;
        var w = _weights;
        backend.EmbeddingForward(b, t, c, v, _tokens, w.TokenTable, w.PositionTable, _acts.Encoded(n));
        var residual = _acts.Encoded(n);
        for (var l = 0; l < Config.Layers; l++)
        {
            var lw = w.Layers[l];
            var layer = _acts.Layer(l, n, b, t);
            backend.LayerNormForward(n, c, residual, lw.Ln1Weight, lw.Ln1Bias, layer.Ln1, layer.Ln1Mean, layer.Ln1Rstd);
            Linear(l, Qkv, n, layer.Ln1, layer.Qkv);
            backend.AttentionForward(b, t, c, nh, layer.Qkv, layer.Attention, layer.AttentionOutput);
            Linear(l, AttentionProjection, n, layer.AttentionOutput, layer.AttentionProjection);
            backend.ResidualForward(residual, layer.AttentionProjection, layer.Residual2);
            backend.LayerNormForward(n, c, layer.Residual2, lw.Ln2Weight, lw.Ln2Bias, layer.Ln2, layer.Ln2Mean, layer.Ln2Rstd);
            Linear(l, MlpUp, n, layer.Ln2, layer.MlpHidden);
            backend.GeluForward(layer.MlpHidden, layer.MlpGelu);
            Linear(l, MlpDown, n, layer.MlpGelu, layer.MlpProjection);
            backend.ResidualForward(layer.Residual2, layer.MlpProjection, layer.Residual3);
            residual = layer.Residual3;
        }
        backend.LayerNormForward(n, c, residual, w.LnFWeight, w.LnFBias, _acts.LnF(n), _acts.LnFMean(n), _acts.LnFRstd(n));
        _probabilitiesRows = 0;
        _headGradientDone = false;
        _counted = 0;
        if (_haveTargets) foreach (var target in _targets.AsSpan(0, n)) if (target >= 0) _counted++;
        var headGradient = training && _haveTargets && _counted > 0 && !TrainBase;
        for (var first = 0; first < n; first += LogitRows)
        {
            var rows = Math.Min(LogitRows, n - first);
            HeadLogits(first, rows);
            (_logitsFirst, _logitsRows) = (first, rows);
            if (_haveTargets) HeadCrossEntropy(first, rows);
            if (headGradient) HeadInputGradient(first, rows);
        }
        _headGradientDone = headGradient;
        if (!_haveTargets || _counted == 0) return float.NaN;
        var losses = _acts.LossesHost(n);
        backend.Download(_acts.Losses(n), losses);
        double sum = 0;
        foreach (var loss in losses) sum += loss;
        return (float)(sum / _counted);
    }

    /// <summary>
    /// Copies the per-position losses -log p(target) of the last <see cref="Forward"/> with targets,
    /// (B,T) row-major, into <paramref name="destination"/>; a position whose target was -1 holds 0.
    /// Summing a row's losses gives the log-likelihood of its counted targets (negated).
    /// </summary>
    /// <exception cref="InvalidOperationException">The last forward pass had no targets.</exception>
    public void CopyPositionLosses(Span<float> destination)
    {
        if (!_haveTargets) throw new InvalidOperationException("the last forward pass had no targets, so it computed no losses");
        var n = _batch * _time;
        if (destination.Length != n) throw new ArgumentException($"destination must hold B*T = {n} losses, got {destination.Length}", nameof(destination));
        Backend.Download(_acts.Losses(n), destination);
    }

    /// <summary>Zeroes the gradients of everything being trained (adapters, and base weights when <see cref="TrainBase"/>).</summary>
    public void ZeroGradients()
    {
        if (TrainBase) Backend.Fill(ParameterGradients, 0f);
        if (Adapters is { } adapters) Backend.Fill(adapters.Gradients, 0f);
    }

    /// <summary>
    /// Accumulates d(mean loss)/d(parameters) of the last forward pass into the adapters' gradients
    /// and, when <see cref="TrainBase"/>, the base weights' gradients. Call <see cref="ZeroGradients"/> first.
    /// </summary>
    public void Backward()
    {
        if (!_haveTargets) throw new InvalidOperationException("Backward needs a forward pass with targets first");
        if (_counted == 0) return;
        var (b, t, c, v, nh) = (_batch, _time, Config.Channels, Config.VocabSize, Config.Heads);
        var n = b * t;
        var backend = Backend;
        var g = _grads;
        var w = _weights;
        var dw = WeightGrads;

        // Each activation gradient's first writer overwrites it (accumulate: false), so none is zeroed
        // first; only residual, which LayerNormBackward adds into, is.
        // The forward pass computed the head's input gradient unless told no backward followed, or
        // the base was trained (or is now: the token table's gradient still needs the head's backward).
        if (!_headGradientDone || dw is not null) HeadBackward(n, dw?.TokenTable);
        var residual = g.Residual(n);
        backend.Fill(residual, 0f);
        var lastResidual = _acts.Layer(Config.Layers - 1, n, b, t).Residual3;
        backend.LayerNormBackward(n, c, g.Normed(n), lastResidual, w.LnFWeight, _acts.LnFMean(n), _acts.LnFRstd(n),
            residual, dw?.LnFWeight, dw?.LnFBias);

        // Without base training, no gradient below the first adapted linear (in forward order) reaches
        // anything trainable: that linear computes no input gradient and the backward ends there.
        // With LoRA on every linear this skips layer 0's qkv input gradient and LayerNorm backward.
        var firstTrained = TrainBase ? -1 : Array.FindIndex(_adapterOf, module => module >= 0);
        for (var l = Config.Layers - 1; l >= 0; l--)
        {
            // residual holds d(loss)/d(residual3) of block l; it becomes d/d(residual2), then d/d(block input).
            var lw = w.Layers[l];
            var ldw = dw?.Layers[l];
            var layer = _acts.Layer(l, n, b, t);
            var blockInput = l == 0 ? _acts.Encoded(n) : _acts.Layer(l - 1, n, b, t).Residual3;

            if (LinearBackward(l, MlpDown, n, residual, layer.MlpGelu, g.MlpGelu(n), firstTrained)) return;
            backend.GeluBackward(layer.MlpHidden, g.MlpGelu(n), g.MlpHidden(n), accumulate: false);
            if (LinearBackward(l, MlpUp, n, g.MlpHidden(n), layer.Ln2, g.Normed(n), firstTrained)) return;
            backend.LayerNormBackward(n, c, g.Normed(n), layer.Residual2, lw.Ln2Weight, layer.Ln2Mean, layer.Ln2Rstd,
                residual, ldw?.Ln2Weight, ldw?.Ln2Bias);

            if (LinearBackward(l, AttentionProjection, n, residual, layer.AttentionOutput, g.AttentionOutput(n), firstTrained)) return;
            backend.AttentionBackward(b, t, c, nh, layer.Qkv, layer.Attention, g.AttentionOutput(n), g.Qkv(n), accumulate: false);
            if (LinearBackward(l, Qkv, n, g.Qkv(n), layer.Ln1, g.Normed(n), firstTrained)) return;
            backend.LayerNormBackward(n, c, g.Normed(n), blockInput, lw.Ln1Weight, layer.Ln1Mean, layer.Ln1Rstd,
                residual, ldw?.Ln1Weight, ldw?.Ln1Bias);
        }
        if (dw is not null)
        {
            backend.EmbeddingBackward(b, t, c, v, _tokens, residual, dw.TokenTable, dw.PositionTable);
        }
    }

    /// <summary>logits(rows,V) = lnf[first..first+rows) wte^T: one chunk of the tied head, into the logits slot.</summary>
    private void HeadLogits(int first, int rows)
    {
        var (c, v) = (Config.Channels, Config.VocabSize);
        Backend.MatmulForward(rows, c, v, _acts.LnF(_batch * _time).Slice(first * c, rows * c), _weights.TokenTable, null, _acts.Logits(rows, v));
    }

    /// <summary>Probabilities and per-position losses of the chunk of rows whose logits are held.</summary>
    private void HeadCrossEntropy(int first, int rows)
    {
        var v = Config.VocabSize;
        Backend.CrossEntropyForward(rows, v, _acts.Logits(rows, v), _targets.AsSpan(first, rows), _acts.Probabilities(rows, v),
            _acts.Losses(_batch * _time).Slice(first, rows));
        (_probabilitiesFirst, _probabilitiesRows) = (first, rows);
    }

    /// <summary>
    /// d(loss)/d(logits) of the chunk of rows whose probabilities are held, into the logits slot (its
    /// logits are no longer needed, and no longer held).
    /// </summary>
    private BufferView HeadLogitsGradient(int first, int rows)
    {
        var v = Config.VocabSize;
        var logitsGrad = _acts.Logits(rows, v);
        Backend.CrossEntropyBackward(rows, v, _acts.Probabilities(rows, v), _targets.AsSpan(first, rows), 1f / _counted, logitsGrad, accumulate: false);
        _logitsRows = 0;
        return logitsGrad;
    }

    /// <summary>
    /// d(loss)/d(lnf) of the chunk of rows whose probabilities are held, into its rows of the Normed
    /// scratch: the ops <see cref="HeadBackward"/> runs for that chunk, without a token-table gradient.
    /// </summary>
    private void HeadInputGradient(int first, int rows)
    {
        var (c, v) = (Config.Channels, Config.VocabSize);
        var n = _batch * _time;
        var logitsGrad = HeadLogitsGradient(first, rows);
        Backend.MatmulBackward(rows, c, v, logitsGrad, _acts.LnF(n).Slice(first * c, rows * c), _weights.TokenTable,
            _grads.Normed(n).Slice(first * c, rows * c), null, null, accumulate: false);
    }

    /// <summary>
    /// The head's backward, chunk by chunk from the last (whose probabilities the forward pass left in
    /// place): overwrites d(loss)/d(lnf) in the Normed scratch and, when given, adds the head's part of
    /// the tied embedding's gradient (MatmulBackward always adds weight gradients).
    /// </summary>
    private void HeadBackward(int n, BufferView? tokenTableGrad)
    {
        var (c, v) = (Config.Channels, Config.VocabSize);
        var normed = _grads.Normed(n);
        var lnF = _acts.LnF(n);
        var chunks = (n + LogitRows - 1) / LogitRows;
        for (var chunk = chunks - 1; chunk >= 0; chunk--)
        {
            var first = chunk * LogitRows;
            var rows = Math.Min(LogitRows, n - first);
            if (_probabilitiesFirst != first || _probabilitiesRows != rows)
            {
                HeadLogits(first, rows);
                HeadCrossEntropy(first, rows);
            }
            var logitsGrad = HeadLogitsGradient(first, rows);
            Backend.MatmulBackward(rows, c, v, logitsGrad, lnF.Slice(first * c, rows * c), _weights.TokenTable, normed.Slice(first * c, rows * c),
                tokenTableGrad, null, accumulate: false);
        }
    }

    private void Linear(int layer, int slot, int n, BufferView input, BufferView output)
    {
        var module = _adapterOf[layer * 4 + slot];
        var (c, o) = LinearShape(slot);
        var (weight, bias) = _weights.Layers[layer].Linear(slot);
        if (module < 0)
        {
            Backend.MatmulForward(n, c, o, input, weight, bias, output);
            return;
        }
        var adapters = Adapters!;
        var indices = adapters.ActiveIndices(module);
        adapters.Adapters[module].Forward(Backend, n, input, weight, bias, indices, adapters.ActiveScale(module),
            LoraHidden(layer, slot, n, indices?.Length ?? adapters.Rank), output);
    }

    /// <summary>
    /// The backward of <see cref="Linear"/>: overwrites inputGrad, and accumulates the weight and adapter
    /// gradients. Returns true, computing no inputGrad, when this linear is the first trained one
    /// (position layer*4 + slot == <paramref name="firstTrained"/>): the backward ends with it.
    /// </summary>
    private bool LinearBackward(int layer, int slot, int n, BufferView outputGrad, BufferView input, BufferView inputGrad, int firstTrained)
    {
        var position = layer * 4 + slot;
        var last = position == firstTrained;
        var module = _adapterOf[position];
        var (c, o) = LinearShape(slot);
        var weight = _weights.Layers[layer].Linear(slot).Weight;
        var grads = WeightGrads?.Layers[layer].Linear(slot);
        BufferView? dx = last ? null : inputGrad;
        if (module < 0)
        {
            Backend.MatmulBackward(n, c, o, outputGrad, input, weight, dx, grads?.Weight, grads?.Bias, accumulate: false);
            return last;
        }
        var adapters = Adapters!;
        var indices = adapters.ActiveIndices(module);
        adapters.Adapters[module].Backward(Backend, n, outputGrad, input, weight, indices, adapters.ActiveScale(module),
            LoraHidden(layer, slot, n, indices?.Length ?? adapters.Rank), dx, grads?.Weight, grads?.Bias,
            adapters.GradientOfA(module), adapters.GradientOfB(module), accumulate: false);
        return last;
    }

    private (int C, int O) LinearShape(int slot)
    {
        var c = Config.Channels;
        return slot switch
        {
            Qkv => (c, 3 * c),
            AttentionProjection => (c, c),
            MlpUp => (c, 4 * c),
            _ => (4 * c, c),
        };
    }

    private BufferView LoraHidden(int layer, int slot, int n, int k) =>
        _loraHidden!.View((layer * 4 + slot) * MaxBatch * MaxTime * _loraHiddenWidth, n * k);

    private void EnsureLoraHidden()
    {
        var width = Adapters?.MaxActiveRank ?? 0;
        if (width <= _loraHiddenWidth) return;
        _loraHidden?.Dispose();
        _loraHidden = Backend.Allocate(checked(Config.Layers * 4 * MaxBatch * MaxTime * width));
        _loraHiddenWidth = width;
    }

    /// <summary>Releases every buffer the model owns (not the attached adapters).</summary>
    public void Dispose()
    {
        Parameters.Dispose();
        _parameterGradients?.Dispose();
        _loraHidden?.Dispose();
        _acts.Buffer.Dispose();
        _grads.Buffer.Dispose();
    }

    /// <summary>Views of one block's weights (or of their gradients).</summary>
    private sealed record LayerWeights(
        BufferView Ln1Weight, BufferView Ln1Bias, BufferView QkvWeight, BufferView QkvBias, BufferView AttentionProjectionWeight,
        BufferView AttentionProjectionBias, BufferView Ln2Weight, BufferView Ln2Bias, BufferView MlpUpWeight, BufferView MlpUpBias,
        BufferView MlpDownWeight, BufferView MlpDownBias)
    {
        public (BufferView Weight, BufferView Bias) Linear(int slot) => slot switch
        {
            Qkv => (QkvWeight, QkvBias),
            AttentionProjection => (AttentionProjectionWeight, AttentionProjectionBias),
            MlpUp => (MlpUpWeight, MlpUpBias),
            _ => (MlpDownWeight, MlpDownBias),
        };
    }

    /// <summary>Views of every base tensor in a buffer of <see cref="GptParameters"/>' layout, resolved once.</summary>
    private sealed class Weights
    {
        public Weights(GptParameters layout, DeviceBuffer buffer)
        {
            BufferView V(string name) => layout.View(buffer, name);
            TokenTable = V("transformer.wte.weight");
            PositionTable = V("transformer.wpe.weight");
            LnFWeight = V("transformer.ln_f.weight");
            LnFBias = V("transformer.ln_f.bias");
            Layers = new LayerWeights[layout.Config.Layers];
            for (var l = 0; l < Layers.Length; l++)
            {
                var h = $"transformer.h.{l}.";
                Layers[l] = new LayerWeights(V(h + "ln_1.weight"), V(h + "ln_1.bias"), V(h + "attn.c_attn.weight"), V(h + "attn.c_attn.bias"),
                    V(h + "attn.c_proj.weight"), V(h + "attn.c_proj.bias"), V(h + "ln_2.weight"), V(h + "ln_2.bias"),
                    V(h + "mlp.c_fc.weight"), V(h + "mlp.c_fc.bias"), V(h + "mlp.c_proj.weight"), V(h + "mlp.c_proj.bias"));
            }
        }

        public BufferView TokenTable { get; }
        public BufferView PositionTable { get; }
        public BufferView LnFWeight { get; }
        public BufferView LnFBias { get; }
        public LayerWeights[] Layers { get; }
    }

    /// <summary>Views of one block's activations for the current (B,T).</summary>
    private readonly record struct LayerActivations(
        BufferView Ln1, BufferView Ln1Mean, BufferView Ln1Rstd, BufferView Qkv, BufferView Attention, BufferView AttentionOutput,
        BufferView AttentionProjection, BufferView Residual2, BufferView Ln2, BufferView Ln2Mean, BufferView Ln2Rstd,
        BufferView MlpHidden, BufferView MlpGelu, BufferView MlpProjection, BufferView Residual3);

    /// <summary>
    /// Every activation the backward pass needs, in one buffer. Each tensor has a fixed slot sized for
    /// (maxB, maxT); a pass with a smaller (B,T) uses the front of each slot.
    /// </summary>
    private sealed class Activations
    {
        private readonly int _rows, _c, _v, _nh, _layerStride, _attentionSlot;
        private readonly int _encoded, _layers, _lnF, _lnFMean, _lnFRstd, _logits, _probabilities, _losses;
        private float[] _lossesHost = [];

        public Activations(Backend backend, GptConfig config, int rows, int maxBatch, int logitRows)
        {
            _rows = rows;
            _c = config.Channels;
            _v = config.VocabSize;
            _nh = config.Heads;
            var maxT = rows / maxBatch;
            _attentionSlot = checked(maxBatch * _nh * maxT * maxT);
            // Per block: ln1, attention output, attention projection, residual2, ln2, mlp projection,
            // residual3 (C each), qkv (3C), mlp hidden and gelu (4C each), four (N) statistics, attention.
            _layerStride = checked(rows * (7 * _c + 3 * _c + 8 * _c + 4) + _attentionSlot);
            var offset = 0;
            int Take(int length)
            {
                var start = offset;
                offset = checked(offset + length);
                return start;
            }
            _encoded = Take(rows * _c);
            _layers = Take(checked(config.Layers * _layerStride));
            _lnF = Take(rows * _c);
            _lnFMean = Take(rows);
            _lnFRstd = Take(rows);
            _logits = Take(checked(logitRows * _v));
            _probabilities = Take(checked(logitRows * _v));
            _losses = Take(rows);
            Buffer = backend.Allocate(offset);
        }

        public DeviceBuffer Buffer { get; }

        public BufferView Encoded(int n) => Buffer.View(_encoded, n * _c);
        public BufferView LnF(int n) => Buffer.View(_lnF, n * _c);
        public BufferView LnFMean(int n) => Buffer.View(_lnFMean, n);
        public BufferView LnFRstd(int n) => Buffer.View(_lnFRstd, n);
        public BufferView Logits(int rows, int v) => Buffer.View(_logits, rows * v);
        public BufferView Probabilities(int rows, int v) => Buffer.View(_probabilities, rows * v);
        public BufferView Losses(int n) => Buffer.View(_losses, n);

        public Span<float> LossesHost(int n)
        {
            if (_lossesHost.Length < n) _lossesHost = new float[_rows];
            return _lossesHost.AsSpan(0, n);
        }

        public LayerActivations Layer(int layer, int n, int b, int t)
        {
            var offset = _layers + layer * _layerStride;
            BufferView Next(int slot, int used)
            {
                var view = Buffer.View(offset, used);
                offset += slot;
                return view;
            }
            var (rows, c) = (_rows, _c);
            return new LayerActivations(
                Ln1: Next(rows * c, n * c), Ln1Mean: Next(rows, n), Ln1Rstd: Next(rows, n), Qkv: Next(rows * 3 * c, n * 3 * c),
                Attention: Next(_attentionSlot, b * _nh * t * t), AttentionOutput: Next(rows * c, n * c),
                AttentionProjection: Next(rows * c, n * c), Residual2: Next(rows * c, n * c), Ln2: Next(rows * c, n * c),
                Ln2Mean: Next(rows, n), Ln2Rstd: Next(rows, n), MlpHidden: Next(rows * 4 * c, n * 4 * c),
                MlpGelu: Next(rows * 4 * c, n * 4 * c), MlpProjection: Next(rows * c, n * c), Residual3: Next(rows * c, n * c));
        }
    }

    /// <summary>Gradient buffers of the backward pass: the residual stream's and one block's scratch, reused by every block.</summary>
    private sealed class GradientScratch
    {
        private readonly int _c, _residual, _normed, _attentionOutput, _qkv, _mlpHidden, _mlpGelu;

        public GradientScratch(Backend backend, GptConfig config, int rows)
        {
            _c = config.Channels;
            var offset = 0;
            int Take(int length)
            {
                var start = offset;
                offset = checked(offset + length);
                return start;
            }
            _residual = Take(rows * _c);
            _normed = Take(rows * _c);
            _attentionOutput = Take(rows * _c);
            _qkv = Take(rows * 3 * _c);
            _mlpHidden = Take(rows * 4 * _c);
            _mlpGelu = Take(rows * 4 * _c);
            Buffer = backend.Allocate(offset);
        }

        public DeviceBuffer Buffer { get; }

        public BufferView Residual(int n) => Buffer.View(_residual, n * _c);
        public BufferView Normed(int n) => Buffer.View(_normed, n * _c);
        public BufferView AttentionOutput(int n) => Buffer.View(_attentionOutput, n * _c);
        public BufferView Qkv(int n) => Buffer.View(_qkv, n * 3 * _c);
        public BufferView MlpHidden(int n) => Buffer.View(_mlpHidden, n * 4 * _c);
        public BufferView MlpGelu(int n) => Buffer.View(_mlpGelu, n * 4 * _c);
    }
}
