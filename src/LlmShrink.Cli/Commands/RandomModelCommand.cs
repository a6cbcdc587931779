using System.CommandLine;
using LlmShrink.Formats;
using LlmShrink.Model.Synthesis;

namespace LlmShrink.Cli.Commands;

/// <summary><c>llmshrink random-model --shape S --dtype T --out DIR</c>: a real model's shape with random weights.</summary>
internal static class RandomModelCommand
{
    public static Command Create(CancellationToken cancellation)
    {
        var shape = new Option<string>("--shape") { Description = "Model shape to copy", Required = true };
        shape.AcceptOnlyFromAmong([.. RandomModel.ShapeNames]);
        var dtype = new Option<string>("--dtype") { Description = "Storage type of the weights", DefaultValueFactory = _ => "BF16" };
        dtype.AcceptOnlyFromAmong("F32", "F16", "BF16");
        var output = new Option<string>("--out") { Description = "Folder to write config.json and model.safetensors into", Required = true };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the random weights", DefaultValueFactory = _ => 0 };
        var vocab = new Option<int?>("--vocab")
        {
            Description = "Vocabulary size instead of the shape's own (e.g. 4096 to pair the model with tinylit-8m's tokenizer, "
                + "so that the benchmark measures the blocks rather than a 128K-row embedding)",
        };
        var command = new Command("random-model", "Write a Hugging Face model folder with a real model's shape and random weights (no tokenizer)")
        {
            shape, dtype, output, seed, vocab,
        };
        command.SetAction(parse =>
        {
            var config = RandomModel.Shape(parse.GetValue(shape)!);
            if (parse.GetValue(vocab) is int size) config = RandomModel.WithVocabulary(config, size);
            var type = Enum.Parse<TensorType>(parse.GetValue(dtype)!);
            string folder = parse.GetValue(output)!;
            long total = RandomModel.TensorBytes(config, type);
            Terminal.WithProgress($"writing {Terminal.Bytes(total)}", total, report =>
            {
                RandomModel.Write(folder, config, type, parse.GetValue(seed), written => report(written), cancellation);
                return 0;
            });
            Console.Error.WriteLine($"wrote {folder}: {Terminal.Bytes(total)} of {type} tensors");
            return 0;
        });
        return command;
    }
}
