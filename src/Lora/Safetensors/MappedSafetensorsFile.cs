using System.Buffers;
using System.IO.MemoryMappedFiles;

namespace FedLora.Lora.Safetensors;

/// <summary>
/// A safetensors file read through a read-only memory map: the operating system pages the weights in
/// from the file as tensors are read, so loading a checkpoint never holds a second copy of it in the
/// process's own memory. Validated exactly as <see cref="SafetensorsFile.Load"/> validates.
/// </summary>
public sealed class MappedSafetensorsFile : IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly MappedMemory _memory;

    private MappedSafetensorsFile(MemoryMappedFile map, MemoryMappedViewAccessor view, MappedMemory memory, SafetensorsFile file)
    {
        _map = map;
        _view = view;
        _memory = memory;
        File = file;
    }

    /// <summary>The parsed file; valid until this object is disposed.</summary>
    public SafetensorsFile File { get; }

    /// <summary>Maps and validates the safetensors file at <paramref name="path"/>.</summary>
    /// <exception cref="SafetensorsFormatException">The file is malformed, or 2 GiB or larger (shard it).</exception>
    public static MappedSafetensorsFile Open(string path)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        var length = new FileInfo(path).Length;
        if (length > Array.MaxLength)
        {
            throw new SafetensorsFormatException(path, null,
                $"is {length} bytes; files of 2 GiB or more are not supported: save the checkpoint in shards (save_pretrained(max_shard_size=\"1GB\"))");
        }
        if (length == 0) throw new SafetensorsFormatException(path, null, "is empty");
        var map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        MemoryMappedViewAccessor? view = null;
        try
        {
            view = map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            var memory = new MappedMemory(view, (int)length);
            var file = SafetensorsFile.Parse(memory.Memory, path);
            return new MappedSafetensorsFile(map, view, memory, file);
        }
        catch
        {
            view?.Dispose();
            map.Dispose();
            throw;
        }
    }

    /// <summary>Unmaps the file.</summary>
    public void Dispose()
    {
        ((IDisposable)_memory).Dispose();
        _view.Dispose();
        _map.Dispose();
    }

    /// <summary>The mapped bytes as <see cref="Memory{T}"/>, the form <see cref="SafetensorsFile.Parse"/> takes.</summary>
    private sealed unsafe class MappedMemory : MemoryManager<byte>
    {
        private readonly MemoryMappedViewAccessor _view;
        private readonly byte* _pointer;
        private readonly int _length;

        public MappedMemory(MemoryMappedViewAccessor view, int length)
        {
            _view = view;
            byte* pointer = null;
            view.SafeMemoryMappedViewHandle.AcquirePointer(ref pointer);
            _pointer = pointer + view.PointerOffset;
            _length = length;
        }

        public override Span<byte> GetSpan() => new(_pointer, _length);

        public override MemoryHandle Pin(int elementIndex = 0) => new(_pointer + elementIndex);

        public override void Unpin()
        {
        }

        protected override void Dispose(bool disposing) => _view.SafeMemoryMappedViewHandle.ReleasePointer();
    }
}
