using LlmShrink.Planning;
using Xunit;

namespace LlmShrink.Tests;

/// <summary>The planner's solver against brute force: its front holds the exact optimum for every budget.</summary>
public class MultipleChoiceKnapsackTests
{
    private static List<IReadOnlyList<Option>> RandomProblem(Random random, int groups, int options) =>
        [.. Enumerable.Range(0, groups).Select(_ => (IReadOnlyList<Option>)[.. Enumerable.Range(0, options)
            .Select(_ => new Option(random.Next(1, 100), Math.Round(random.NextDouble() * 10, 3)))])];

    /// <summary>Every combination: (cost, loss).</summary>
    private static List<(long Cost, double Loss)> All(List<IReadOnlyList<Option>> problem)
    {
        var plans = new List<(long, double)> { (0, 0) };
        foreach (var group in problem)
            plans = [.. plans.SelectMany(p => group.Select(o => (p.Item1 + o.Cost, p.Item2 + o.Loss)))];
        return plans;
    }

    [Theory]
    [InlineData(1, 3, 5)]
    [InlineData(2, 5, 4)]
    [InlineData(3, 6, 3)]
    [InlineData(4, 4, 6)]
    public void MatchesBruteForceForEveryBudget(int seed, int groups, int options)
    {
        var random = new Random(seed);
        var problem = RandomProblem(random, groups, options);
        var all = All(problem);
        var solver = new MultipleChoiceKnapsack(problem);
        Assert.False(solver.Thinned);
        for (long budget = all.Min(p => p.Cost); budget <= all.Max(p => p.Cost); budget += 3)
        {
            double best = all.Where(p => p.Cost <= budget).Min(p => p.Loss);
            var plan = solver.WithinCost(budget)!;
            Assert.Equal(best, plan.Loss, 9);
            Assert.True(plan.Cost <= budget);
            // The choices add up to what the plan says.
            Assert.Equal(plan.Cost, plan.Choices.Select((o, g) => problem[g][o].Cost).Sum());
            Assert.Equal(plan.Loss, plan.Choices.Select((o, g) => problem[g][o].Loss).Sum(), 9);
        }
        foreach (double maxLoss in new[] { 5.0, 10, 20, 30 })
        {
            var feasible = all.Where(p => p.Loss <= maxLoss).ToList();
            var plan = solver.WithinLoss(maxLoss);
            if (feasible.Count == 0) Assert.Null(plan);
            else Assert.Equal(feasible.Min(p => p.Cost), plan!.Cost);
        }
        Assert.Null(solver.WithinCost(all.Min(p => p.Cost) - 1));
    }

    [Fact]
    public void FrontIsStrictlyBetterAsItGetsDearer()
    {
        var problem = RandomProblem(new Random(7), 8, 6);
        var front = new MultipleChoiceKnapsack(problem).Front;
        for (int i = 1; i < front.Count; i++)
        {
            Assert.True(front[i].Cost > front[i - 1].Cost);
            Assert.True(front[i].Loss < front[i - 1].Loss);
        }
        // Its ends are the cheapest plan and the least-loss plan.
        Assert.Equal(problem.Sum(g => g.Min(o => o.Cost)), front[0].Cost);
        Assert.Equal(problem.Sum(g => g.Min(o => o.Loss)), front[^1].Loss, 9);
    }

    [Fact]
    public void ReachesOptimaALagrangianSweepCannot()
    {
        // Two groups; the optimum under 10 bytes is (a1, b0) = cost 10, loss 6. The plans' lower convex hull runs
        // (0, 18), (5, 10), (15, 0) and passes cost 10 at loss 5, below it, so no λ in min Σ loss + λ·cost selects it:
        // a sweep gets (5, 10) within that budget.
        IReadOnlyList<Option> a = [new(0, 10), new(5, 6), new(10, 0)];
        IReadOnlyList<Option> b = [new(5, 0), new(0, 8)];
        var plan = new MultipleChoiceKnapsack([a, b]).WithinCost(10)!;
        Assert.Equal(6, plan.Loss);
        Assert.Equal(new[] { 1, 0 }, plan.Choices);
    }

    [Fact]
    public void RejectsAnEmptyProblem()
    {
        Assert.Throws<ArgumentException>(() => new MultipleChoiceKnapsack([]));
        Assert.Throws<ArgumentException>(() => new MultipleChoiceKnapsack([[]]));
    }
}
