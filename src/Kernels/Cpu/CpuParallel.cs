using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace FedLora.Kernels.Cpu;

/// <summary>A unit of parallel work: <see cref="Execute"/> runs task <c>index</c> of a job's tasks.</summary>
internal interface IParallelJob
{
    void Execute(int index);
}

/// <summary>
/// A persistent pool of one worker per extra core that runs the tasks of one job at a time,
/// allocation-free: the job is an unmanaged struct on the caller's stack, passed by pointer, and
/// the caller blocks (and works) until every task is done. Idle workers spin briefly before they
/// sleep (<see cref="SpinTicks"/>). Task i always computes the same thing
/// whichever thread takes it, so results do not depend on scheduling. A second caller that finds
/// the pool busy, or a call from inside a task, runs its job on its own thread.
/// </summary>
internal static unsafe class CpuParallel
{
    private static readonly object Gate = new();
    private static readonly int WorkerCount = Math.Max(0, Environment.ProcessorCount - 1);
    private static readonly SemaphoreSlim Wake = new(0, int.MaxValue);

    [ThreadStatic] private static bool t_insideTask;

    /// <summary>
    /// How long an idle worker spins for the next job before it sleeps: 200 us. Waking a sleeping
    /// worker took about 35 us on this 2-vCPU VM (an idle vCPU halts), against 0.5 us for a spinning
    /// one, and a training step starts a few hundred jobs with short serial gaps between them.
    /// Measured: L4-C128 LoRA step median 3-7% faster; no change at L6-C256.
    /// </summary>
    private static readonly long SpinTicks = Stopwatch.Frequency / 5000;

    /// <summary>Jobs started so far: a worker takes a job when it sees this change.</summary>
    private static int s_generation;

    /// <summary>Workers that gave up spinning and wait on <see cref="Wake"/>.</summary>
    private static int s_sleepers;

    private static void* s_job;
    private static delegate*<void*, int, void> s_execute;
    private static int s_taskCount;
    private static int s_nextTask;
    private static int s_busyWorkers;
    private static Exception? s_failure;

#pragma warning disable CA1810 // The workers must start once, when the pool is first used.
    static CpuParallel()
#pragma warning restore CA1810
    {
        for (var i = 0; i < WorkerCount; i++)
        {
            new Thread(WorkerLoop) { IsBackground = true, Name = $"FedLora CPU worker {i}" }.Start();
        }
    }

    /// <summary>Threads that take part in a job: the workers and the caller.</summary>
    public static int ThreadCount => WorkerCount + 1;

    /// <summary>Runs <c>job.Execute(i)</c> for every i in [0, taskCount) and returns when all are done.</summary>
    public static void For<TJob>(int taskCount, ref TJob job) where TJob : unmanaged, IParallelJob
    {
        if (taskCount <= 0) return;
        if (taskCount == 1 || WorkerCount == 0 || t_insideTask || !Monitor.TryEnter(Gate))
        {
            for (var i = 0; i < taskCount; i++) job.Execute(i);
            return;
        }
        try
        {
            fixed (TJob* pointer = &job)
            {
                s_job = pointer;
                s_execute = &Runner<TJob>.Execute;
                s_taskCount = taskCount;
                Volatile.Write(ref s_nextTask, 0);
                // Every worker takes part (one finding no task left just reports done). A worker that
                // counted itself a sleeper before the exchange gets a token; one that counts itself
                // after it sees the new generation first and does not sleep.
                Volatile.Write(ref s_busyWorkers, WorkerCount);
                Interlocked.Increment(ref s_generation);
                var sleepers = Interlocked.Exchange(ref s_sleepers, 0);
                if (sleepers > 0) Wake.Release(sleepers);
                try
                {
                    RunTasks();
                }
                catch (Exception e)
                {
                    Interlocked.CompareExchange(ref s_failure, e, null);
                }
                // The job lives on this stack frame: wait for every worker before leaving it.
                var spinner = new SpinWait();
                while (Volatile.Read(ref s_busyWorkers) != 0) spinner.SpinOnce(sleep1Threshold: -1);
                s_job = null;
            }
            if (Interlocked.Exchange(ref s_failure, null) is { } failure)
            {
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(failure);
            }
        }
        finally
        {
            Monitor.Exit(Gate);
        }
    }

    private static void RunTasks()
    {
        t_insideTask = true;
        try
        {
            int index;
            while ((index = Interlocked.Increment(ref s_nextTask) - 1) < s_taskCount) s_execute(s_job, index);
        }
        finally
        {
            t_insideTask = false;
        }
    }

    private static void WorkerLoop()
    {
        var seen = 0;
        while (true)
        {
            if (!SpinForJob(seen))
            {
                Interlocked.Increment(ref s_sleepers);
                // A token may be stale (released for an earlier sleep that ended by spinning): re-check.
                while (Volatile.Read(ref s_generation) == seen) Wake.Wait();
            }
            seen = Volatile.Read(ref s_generation);
            try
            {
                RunTasks();
            }
#pragma warning disable CA1031 // A failing task is rethrown on the calling thread, never swallowed.
            catch (Exception e)
#pragma warning restore CA1031
            {
                Interlocked.CompareExchange(ref s_failure, e, null);
            }
            finally
            {
                Interlocked.Decrement(ref s_busyWorkers);
            }
        }
    }

    /// <summary>True when a job after <paramref name="seen"/> started within <see cref="SpinTicks"/>.</summary>
    private static bool SpinForJob(int seen)
    {
        var until = Stopwatch.GetTimestamp() + SpinTicks;
        while (Volatile.Read(ref s_generation) == seen)
        {
            if (Stopwatch.GetTimestamp() > until) return false;
            Thread.SpinWait(20);
        }
        return true;
    }

    private static class Runner<TJob> where TJob : unmanaged, IParallelJob
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public static void Execute(void* job, int index) => ((TJob*)job)->Execute(index);
    }
}
