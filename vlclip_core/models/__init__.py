"""Model loaders (CLIP, open-vocabulary detector), device/dtype choice and tiny offline model builders."""
