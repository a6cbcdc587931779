using System.CommandLine;
using System.CommandLine.Parsing;
using System.Runtime.InteropServices;
using System.Text.RegularExpressions;
using LlmShrink.Cli.Commands;

namespace LlmShrink.Cli;

/// <summary>
/// Entry point. Exit codes: 0 success; 2 a user error (bad file, bad argument — one line on stderr, no stack
/// trace); 130 interrupted by Ctrl+C and 143 stopped by SIGTERM (the shell convention 128 + signal number, as if the
/// signal had killed the process); 1 anything else, which is a bug.
/// </summary>
public static class Program
{
    public const int Interrupted = 130;

    public static int Main(string[] args)
    {
        using var interrupt = new CancellationTokenSource();
        int signalExit = Interrupted;
        // SIGINT (Ctrl+C), SIGTERM (kill, container stop) and SIGHUP (closed terminal) all cancel instead of killing, so
        // long loops stop at their next check and every temporary output is deleted on the way out.
        PosixSignalRegistration Cancel(PosixSignal signal, int number) => PosixSignalRegistration.Create(signal, context =>
        {
            context.Cancel = true;
            signalExit = 128 + number;
            interrupt.Cancel();
        });
        using var sigint = Cancel(PosixSignal.SIGINT, 2);
        using var sigterm = Cancel(PosixSignal.SIGTERM, 15);
        using var sighup = Cancel(PosixSignal.SIGHUP, 1);
        int code = Run(args, interrupt.Token);
        return code == Interrupted ? signalExit : code;
    }

    /// <summary>Parses and runs one command line; <paramref name="cancellation"/> stops long-running commands.</summary>
    public static int Run(string[] args, CancellationToken cancellation)
    {
        var root = new RootCommand("llmshrink — compress large language models and run them fast, in pure C#")
        {
            InspectCommand.Create(cancellation),
            GenerateCommand.Create(cancellation),
            EvalCommand.Create(cancellation),
            BenchCommand.Create(cancellation),
            RandomModelCommand.Create(cancellation),
            ExportCommand.Create(cancellation),
            CompressCommand.Create(cancellation),
            AutoCommand.Create(cancellation),
            AnalyzeCommand.Create(cancellation),
            TrainCommand.Create(cancellation),
            DistillCommand.Create(cancellation),
        };
        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0) return UserError(Describe(parsed.Errors[0]));

        var invocation = new InvocationConfiguration
        {
            EnableDefaultExceptionHandler = false, // errors are reported below, one line each
            ProcessTerminationTimeout = null,      // signals are handled by Main through the cancellation token
            Output = Console.Out,
            Error = Console.Error,
        };
        try
        {
            return parsed.Invoke(invocation);
        }
        catch (ShrinkException e)
        {
            return UserError(e.Message);
        }
        catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
        {
            Console.Error.WriteLine("llmshrink: interrupted");
            return Interrupted;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"llmshrink: internal error (please report): {e}");
            return 1;
        }
    }

    private static int UserError(string message)
    {
        Console.Error.WriteLine($"llmshrink: {Regex.Replace(message, @"\s+", " ").Trim()}");
        return 2;
    }

    /// <summary>A parse error, prefixed with the option it concerns ("--protocol: ...") when there is one.</summary>
    private static string Describe(ParseError error)
    {
        var option = error.SymbolResult switch
        {
            OptionResult o => o.Option,
            ArgumentResult { Parent: OptionResult o } => o.Option,
            _ => null,
        };
        return option is null ? error.Message : $"{option.Name}: {error.Message}";
    }
}
