"""The report's training panels: parallel episodes of one round are one point, not N copies."""

from nexlify.evaluation.report import training_rounds


def _records(rounds: list[int]) -> list[dict]:
    records, episode = [], 0
    for index, size in enumerate(rounds):
        for k in range(size):
            episode += 1
            records.append({"episode": episode, "return": 0.01 * k, "loss": 1.0 / (index + 1),
                            "epsilon": 1.0 - 0.1 * index, "transitions_per_sec": 1000.0 + index})
    return records


def test_a_gpu_round_of_1000_parallel_episodes_is_one_point():
    rounds = training_rounds(_records([1000]))
    assert len(rounds) == 1 and rounds[0].end_episode == 1000 and len(rounds[0].returns) == 1000
    assert (min(rounds[0].returns), max(rounds[0].returns)) == (0.0, 9.99)


def test_rounds_are_split_where_loss_epsilon_or_speed_change():
    rounds = training_rounds(_records([4, 4, 2]))
    assert [r.end_episode for r in rounds] == [4, 8, 10]
    assert [len(r.returns) for r in rounds] == [4, 4, 2]
    assert [r.loss for r in rounds] == [1.0, 0.5, 1 / 3] and rounds[2].epsilon == 0.8
    assert [len(r.returns) for r in training_rounds(_records([1] * 5))] == [1] * 5
