"""The one exception type for problems a user can fix: the CLI prints it without a traceback."""


class UserError(Exception):
    """A bad input, config value or file. The message names the file or key and the problem."""


class DatasetError(UserError):
    """Every problem found in a dataset at once; ``problems`` holds one line each."""

    def __init__(self, root: str, problems: list[str]):
        self.root = root
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} problem(s) in dataset {root}:\n{lines}")
