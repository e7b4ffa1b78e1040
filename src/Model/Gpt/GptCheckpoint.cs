using System.Globalization;
using FedLora.Kernels;
using FedLora.Lora.Safetensors;

namespace FedLora.Model;

/// <summary>
/// GPT checkpoints as safetensors files with Hugging Face GPT-2 tensor names. FedLora writes linear
/// weights in HF's Conv1D layout (in,out) so that its files and GPT-2-family checkpoints can be
/// exchanged; a file whose metadata says <c>"layout": "out_in"</c> (such as the PyTorch fixture)
/// holds them as (out,in). The model shape is read from the metadata keys vocab_size,
/// context_length, n_layer, n_embd and n_head.
/// </summary>
public static class GptCheckpoint
{
    /// <summary>Writes the base weights of <paramref name="model"/> atomically to <paramref name="path"/>.</summary>
    public static void Save(Gpt model, string path, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(model);
        var writer = new SafetensorsWriter();
        if (metadata is not null)
        {
            foreach (var (key, value) in metadata) writer.Metadata[key] = value;
        }
        var config = model.Config;
        writer.Metadata["format"] = "fedlora-gpt";
        writer.Metadata["version"] = "1";
        writer.Metadata["layout"] = "in_out";
        writer.Metadata["vocab_size"] = Text(config.VocabSize);
        writer.Metadata["context_length"] = Text(config.ContextLength);
        writer.Metadata["n_layer"] = Text(config.Layers);
        writer.Metadata["n_embd"] = Text(config.Channels);
        writer.Metadata["n_head"] = Text(config.Heads);
        var all = model.Backend.ToArray(model.Parameters);
        foreach (var tensor in model.Layout.Tensors)
        {
            var values = all.AsSpan(tensor.Offset, tensor.Length);
            if (tensor.IsConv1DWeight)
            {
                writer.AddFloats(tensor.Name, Transpose(values, tensor.Shape[0], tensor.Shape[1]), tensor.Shape[1], tensor.Shape[0]);
            }
            else
            {
                writer.AddFloats(tensor.Name, values, tensor.Shape);
            }
        }
        writer.Save(path);
    }

    /// <summary>The model shape recorded in a checkpoint's metadata.</summary>
    public static GptConfig ReadConfig(SafetensorsFile file)
    {
        ArgumentNullException.ThrowIfNull(file);
        int Value(string key)
        {
            if (!file.Metadata.TryGetValue(key, out var text) || !int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value))
            {
                throw new InvalidDataException($"{file.Source}: the metadata has no whole number '{key}'; is this a FedLora GPT checkpoint?");
            }
            return value;
        }
        var config = new GptConfig(Value("vocab_size"), Value("context_length"), Value("n_layer"), Value("n_embd"), Value("n_head"));
        try
        {
            config.Validate();
        }
        catch (ArgumentOutOfRangeException e)
        {
            throw new InvalidDataException($"{file.Source}: the metadata describes an impossible model: {e.Message}", e);
        }
        return config;
    }

    /// <summary>Creates a model with the checkpoint's shape on <paramref name="backend"/> and loads its weights.</summary>
    public static Gpt Load(string path, Backend backend, int maxBatch, int maxTime)
    {
        var file = SafetensorsFile.Load(path);
        var config = ReadConfig(file);
        var model = new Gpt(backend, config, maxBatch, Math.Min(maxTime, config.ContextLength));
        try
        {
            LoadWeights(file, model);
            return model;
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Copies every base tensor of <paramref name="file"/> into <paramref name="model"/>. All names and
    /// shapes are checked before anything is written, so a bad file leaves the model untouched.
    /// </summary>
    public static void LoadWeights(SafetensorsFile file, Gpt model)
    {
        ArgumentNullException.ThrowIfNull(file);
        ArgumentNullException.ThrowIfNull(model);
        var transposed = !file.Metadata.TryGetValue("layout", out var layout) || layout != "out_in";
        var values = new float[model.Layout.Length];
        foreach (var tensor in model.Layout.Tensors)
        {
            if (!file.Contains(tensor.Name)) throw new InvalidDataException($"{file.Source}: tensor '{tensor.Name}' is missing");
            if (tensor.IsConv1DWeight && transposed)
            {
                file.RequireShape(tensor.Name, tensor.Shape[1], tensor.Shape[0]);
                var stored = file.ReadFloats(tensor.Name);
                Transpose(stored, tensor.Shape[1], tensor.Shape[0]).CopyTo(values.AsSpan(tensor.Offset));
            }
            else
            {
                file.RequireShape(tensor.Name, tensor.Shape);
                file.ReadFloats(tensor.Name, values.AsSpan(tensor.Offset, tensor.Length));
            }
        }
        model.Backend.Upload(values, model.Parameters);
    }

    private static float[] Transpose(ReadOnlySpan<float> matrix, int rows, int columns)
    {
        var result = new float[matrix.Length];
        for (var i = 0; i < rows; i++)
        {
            for (var j = 0; j < columns; j++) result[j * rows + i] = matrix[i * columns + j];
        }
        return result;
    }

    private static string Text(int value) => value.ToString(CultureInfo.InvariantCulture);
}
