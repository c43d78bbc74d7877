"""Training recipes; each module registers itself (see counterfeit.train.recipe.RECIPE_MODULES)."""
