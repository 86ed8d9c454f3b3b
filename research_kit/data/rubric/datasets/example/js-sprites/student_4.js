var player = createSprite(200, 200);

function draw() {
  background("green");
  drawSprites();
}
