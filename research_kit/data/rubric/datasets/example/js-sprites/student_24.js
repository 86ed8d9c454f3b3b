var fish = createSprite(200, 200);
fish.setAnimation("fish");
fish.scale = 0.5;

function draw() {
  background("blue");
  fish.x = fish.x + 2;
  if (fish.x > 400) {
    fish.x = 0;
  }
  drawSprites();
}
