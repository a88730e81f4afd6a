# Sluice image: built with the dev dependencies (TypeScript), run with production ones only.
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
# `npm ci` runs the prepare script, which builds dist/.
RUN npm ci

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY rules ./rules
USER node
EXPOSE 6432 9187
ENTRYPOINT ["node", "--no-concurrent-recompilation", "dist/cli.js"]
CMD ["serve", "--listen", "0.0.0.0:6432", "--http", "0.0.0.0:9187"]
