using System.Security.Cryptography;

namespace FedLora.Model.Tests.Data;

public class DataFilesTests
{
    [Fact]
    public void DataFiles_Sha256Sums_Match()
    {
        var lines = File.ReadAllLines(RepoPaths.Data("SHA256SUMS")).Where(l => l.Length > 0).ToList();
        Assert.Equal(12, lines.Count);
        foreach (var line in lines)
        {
            var expected = line[..64];
            var relative = line[66..];
            using var stream = File.OpenRead(RepoPaths.Data(relative.Split('/')));
            var actual = Convert.ToHexStringLower(SHA256.HashData(stream));
            Assert.True(expected == actual, $"data/{relative}: sha256 {actual}, SHA256SUMS says {expected}");
        }
    }
}
