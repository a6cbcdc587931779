namespace LlmShrink;

/// <summary>
/// A problem with the user's input (a file, an argument, a recipe), as opposed to a bug.
/// The CLI prints <see cref="Exception.Message"/> as one line and exits with code 2, without a stack trace.
/// The message always names the file (or argument) and the problem: "path: problem".
/// </summary>
public sealed class ShrinkException : Exception
{
    public ShrinkException(string message) : base(message) { }
    public ShrinkException(string message, Exception inner) : base(message, inner) { }

    /// <summary>"file: problem" — the one-line form every user error takes.</summary>
    public static ShrinkException InFile(string path, string problem) => new($"{path}: {problem}");
}
