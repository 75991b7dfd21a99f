"""Keras serialization (`model.save("g.keras")`, `keras.saving.load_model`) for our models.

Their variables are created by one eager call (`build_for_restore`), not by Keras's `build` from
shapes, so loading must make that call before Keras copies the saved weights in; otherwise it
would find no variables to fill.
"""


class BuiltByCall:
    """Mixin for a keras.Model whose `build_for_restore()` creates every variable."""

    def get_build_config(self):
        return {"built_by": "build_for_restore"}

    def build_from_config(self, config):
        self.build_for_restore()
