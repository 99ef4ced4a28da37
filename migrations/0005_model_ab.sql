-- A/B tests of models: a challenger (status 'shadow') decides again, in shadow, for a share of
-- the universe's symbols while the champion keeps trading all of them.

ALTER TABLE model_registry
    ADD COLUMN ab_share double precision
        CONSTRAINT model_registry_ab_share_check CHECK (ab_share > 0 AND ab_share <= 1),
    -- A share means something only while the model is the challenger.
    ADD CONSTRAINT model_registry_ab_share_only_shadow CHECK (ab_share IS NULL OR status = 'shadow');
COMMENT ON COLUMN model_registry.ab_share IS
    'Share of the symbols (0 < share <= 1) the challenger decides for in shadow during an A/B test; NULL otherwise.';

-- One challenger at a time, so that every symbol is compared against one alternative only.
CREATE UNIQUE INDEX model_registry_one_shadow_idx ON model_registry ((true)) WHERE status = 'shadow';
