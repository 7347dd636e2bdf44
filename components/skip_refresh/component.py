from kfp import dsl

from reasoning_ner.images import image


@dsl.component(base_image=image("cpu"), install_kfp_package=False)
def skip_refresh(message: str, champion_version: str) -> str:
    """End a refresh run early when its traffic window gave nothing to train on: nothing is promoted.

    Runs instead of the harvest, training, evaluation and promotion steps when check_window found
    no usable record in the window (no logged traffic, or only evaluation sentences); the champion
    stays as it is and the run says so in its log and its result.

    Args:
        message: What check_window read and why nothing is usable.
        champion_version: The champion that stays.

    Returns:
        The run's decision: 'skipped: ...', with the reason and the champion that stays.
    """
    decision = f"skipped: {message}; nothing was trained or promoted, champion {champion_version} stays"
    print(decision)
    return decision
