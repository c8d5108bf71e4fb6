"""Student architectures. Each module builds one family from a :class:`distill.student.StudentConfig`; the
registry and the save / load format live in :mod:`distill.student`."""
