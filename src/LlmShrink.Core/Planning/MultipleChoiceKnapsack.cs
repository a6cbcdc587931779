namespace LlmShrink.Planning;

/// <summary>One way to store one group of layers: what it costs (bytes) and what it loses (predicted ΔKL).</summary>
public readonly record struct Option(long Cost, double Loss);

/// <summary>A whole plan: one option index per group, and its summed cost and loss.</summary>
public sealed record Selection(IReadOnlyList<int> Choices, long Cost, double Loss);

/// <summary>
/// The multiple-choice knapsack behind the planner: every group takes exactly one of its options, losses add up (the
/// planner's additive ΔKL model), and the question is the least total loss under a byte budget, or the fewest bytes
/// under a loss budget. Solved by dynamic programming over Pareto fronts: after each group the set of non-dominated
/// partial plans (no other partial plan is both cheaper and better) is kept, since any completion of a dominated plan is
/// beaten by the same completion of the plan that dominates it. The final front is then the exact set of optimal plans
/// for every budget at once — which a Lagrangian sweep (min Σ loss + λ·cost) only reaches at the corners of its convex
/// hull — and a second target is answered from it without re-solving. The front stays small in practice (each group's
/// options are few and the costs are spread), and <see cref="MaxFront"/> bounds it: past that, the front is thinned to
/// evenly spaced costs, which keeps the result within one thinning step of the optimum (<see cref="Thinned"/> says so).
/// </summary>
public sealed class MultipleChoiceKnapsack
{
    /// <summary>Largest front carried between groups before it is thinned.</summary>
    public const int MaxFront = 200_000;

    private readonly Point[] _front;

    /// <summary>Partial plan: cost, loss, the option taken in the last group and the partial plan it extends.</summary>
    private sealed record Point(long Cost, double Loss, int Choice, Point? Previous);

    /// <summary>Whether the front had to be thinned (then the answers are near-optimal, not exact).</summary>
    public bool Thinned { get; }

    public MultipleChoiceKnapsack(IReadOnlyList<IReadOnlyList<Option>> groups)
    {
        if (groups.Count == 0) throw new ArgumentException("no groups to plan", nameof(groups));
        var front = new List<Point> { new(0, 0, -1, null) };
        for (int g = 0; g < groups.Count; g++)
        {
            var options = groups[g];
            if (options.Count == 0) throw new ArgumentException($"group {g} has no options", nameof(groups));
            var next = new List<Point>(front.Count * options.Count);
            foreach (var p in front)
                for (int o = 0; o < options.Count; o++)
                    next.Add(new Point(p.Cost + options[o].Cost, p.Loss + options[o].Loss, o, p));
            front = ParetoFront(next);
            if (front.Count > MaxFront)
            {
                front = Thin(front, MaxFront);
                Thinned = true;
            }
        }
        _front = [.. front];
    }

    /// <summary>Every optimal plan, cheapest first (losses strictly falling as costs rise).</summary>
    public IReadOnlyList<Selection> Front => _front.Select(ToSelection).ToList();

    /// <summary>The least-loss plan costing at most <paramref name="budget"/> bytes, or null when even the cheapest costs more.</summary>
    public Selection? WithinCost(long budget)
    {
        Point? best = null;
        foreach (var p in _front) if (p.Cost <= budget) best = p; // costs rise and losses fall along the front
        return best is null ? null : ToSelection(best);
    }

    /// <summary>The cheapest plan losing at most <paramref name="maxLoss"/>, or null when even the best loses more.</summary>
    public Selection? WithinLoss(double maxLoss) =>
        _front.FirstOrDefault(p => p.Loss <= maxLoss) is { } p ? ToSelection(p) : null;

    /// <summary>Sorts by cost and keeps each point that loses less than every cheaper one (ties: the first).</summary>
    private static List<Point> ParetoFront(List<Point> points)
    {
        points.Sort((a, b) => a.Cost != b.Cost ? a.Cost.CompareTo(b.Cost) : a.Loss.CompareTo(b.Loss));
        var front = new List<Point>();
        double best = double.PositiveInfinity;
        foreach (var p in points)
            if (p.Loss < best)
            {
                front.Add(p);
                best = p.Loss;
            }
        return front;
    }

    /// <summary>Keeps the cheapest and the best point and, between them, the best point of each of <paramref name="buckets"/> equal cost ranges.</summary>
    private static List<Point> Thin(List<Point> front, int buckets)
    {
        long low = front[0].Cost, high = front[^1].Cost;
        double width = Math.Max(1.0, (double)(high - low) / (buckets - 1));
        var kept = new List<Point>();
        long lastBucket = -1;
        for (int i = front.Count - 1; i >= 0; i--) // from the best: within a bucket, the last (best) point comes first
        {
            long bucket = (long)((front[i].Cost - low) / width);
            if (bucket != lastBucket || i == 0) kept.Add(front[i]);
            lastBucket = bucket;
        }
        kept.Reverse();
        return kept;
    }

    private static Selection ToSelection(Point end)
    {
        var choices = new List<int>();
        for (var p = end; p.Previous is not null; p = p.Previous) choices.Add(p.Choice);
        choices.Reverse();
        return new Selection(choices, end.Cost, end.Loss);
    }
}
