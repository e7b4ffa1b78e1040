using System.Reflection;
using FedLora.Kernels.Cpu;
using FedLora.Kernels.Ilgpu;
using FedLora.Kernels.Reference;

namespace FedLora.Kernels.Tests;

/// <summary>
/// Every backend implements every op itself. A backend that inherited an op from another backend
/// (say Cpu from Reference) would pass the conformance suite for that op by running the very code it
/// is compared with. The backends are found by reflection, so one added later is covered without
/// editing this file.
/// </summary>
public sealed class BackendStructureTests
{
    private const BindingFlags Members = BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic;

    /// <summary>Every concrete subclass of <see cref="Backend"/> in FedLora.Kernels.</summary>
    private static List<Type> FindBackends() =>
        [.. typeof(Backend).Assembly.GetTypes().Where(type => !type.IsAbstract && typeof(Backend).IsAssignableFrom(type))];

    public static TheoryData<Type> ConcreteBackends() => [.. FindBackends()];

    [Fact]
    public void ConcreteBackends_IncludeTheKnownOnes_SoTheSearchFindsBackends()
    {
        var found = FindBackends();

        Assert.Contains(typeof(CpuBackend), found);
        Assert.Contains(typeof(ReferenceBackend), found);
        Assert.Contains(typeof(IlgpuBackend), found);
    }

    [Theory]
    [MemberData(nameof(ConcreteBackends))]
    public void Backend_DerivesFromBackendDirectly(Type backend)
    {
        Assert.True(backend.BaseType == typeof(Backend),
            $"{backend.Name} derives from {backend.BaseType?.Name}; a backend must derive from Backend alone and implement every op itself");
    }

    [Theory]
    [MemberData(nameof(ConcreteBackends))]
    public void Backend_DeclaresEveryAbstractMemberItself(Type backend)
    {
        var abstractMethods = typeof(Backend).GetMethods(Members).Where(m => m.IsAbstract).ToList();
        Assert.Contains(abstractMethods, m => m.Name == "MatmulForwardCore");

        var missing = abstractMethods
            .Where(m => backend.GetMethod(m.Name, Members | BindingFlags.DeclaredOnly, [.. m.GetParameters().Select(p => p.ParameterType)]) is null)
            .Select(m => m.Name)
            .ToList();

        Assert.True(missing.Count == 0, $"{backend.Name} does not declare {string.Join(", ", missing)} itself");
    }
}
